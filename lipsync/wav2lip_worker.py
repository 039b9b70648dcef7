"""Wav2Lip's torch in an engine worker process, and the renderer-side handle that calls it.

The gateway never imports torch for Wav2Lip: ``Wav2LipWorkerEngine`` runs in a worker started
by ``providers/local/workers`` (a CUDA or CPU fault, an abort in a native kernel or an OOM kill
then fails only the clips being rendered, and the worker is restarted with back-off), and
``RemoteWav2Lip`` gives ``Wav2LipRenderer`` the ``predict`` it had before. Face features stay
cached in the worker, per avatar, as in ``lipsync.engine``.

``RemoteWav2Lip.predict`` blocks: it is called from the render pool's threads, which is also
what bounds how many clips render at once. A batch crosses the boundary as numpy arrays
(64 mel windows are 320 KiB in, 1.7 MiB of mouths out).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from providers.base import ErrorKind, ProviderError
from providers.local.workers.ipc import LoadSpec
from providers.local.workers.supervisor import RestartPolicy, WorkerStats, WorkerSupervisor

ENGINE = "lipsync.wav2lip_worker:Wav2LipWorkerEngine"


@dataclass(frozen=True, slots=True)
class RenderWorkerConfig:
    #: predict calls the worker runs at once (the render pool's size)
    concurrency: int = 2


class Wav2LipWorkerEngine:
    """Worker side: ``lipsync.engine.Wav2LipEngine`` behind the worker protocol."""

    methods = frozenset({"predict", "memory_report"})

    def __init__(self, spec: LoadSpec) -> None:
        from lipsync.engine import Wav2LipEngine
        from lipsync.errors import LipsyncError

        options = spec.options
        try:
            self.engine = Wav2LipEngine.from_checkpoint(spec.files, options["device"], options["batch_size"])
        except LipsyncError as exc:  # its message names what is wrong with the file
            raise ProviderError(ErrorKind.UNAVAILABLE, exc.message, code="CheckpointError") from exc

    def info(self) -> dict[str, Any]:
        return {"memory": self.engine.memory_report(), "batch_size": self.engine.batch_size}

    def predict(
        self, face6: np.ndarray, mels: np.ndarray, cache_key: str | None, *, cancelled: threading.Event
    ) -> tuple[np.ndarray, int, int | None]:
        """Mouths, the batch size now in use (it halves after a CUDA out-of-memory) and the
        CUDA bytes torch holds (None on the CPU)."""
        mouths = self.engine.predict(face6, mels, cache_key=cache_key)
        cuda = self.engine.memory_report().get("cuda")
        return mouths, self.engine.batch_size, cuda["allocated_bytes"] if cuda else None

    def memory_report(self, *, cancelled: threading.Event) -> dict[str, Any]:
        return self.engine.memory_report()


class RemoteWav2Lip:
    """Renderer side: what ``Wav2LipRenderer`` needs of an engine, answered by the worker."""

    def __init__(
        self, checkpoint: Path, *, device: str, batch_size: int, concurrency: int, policy: RestartPolicy
    ) -> None:
        spec = LoadSpec(
            ENGINE,
            "wav2lip",
            RenderWorkerConfig(concurrency),
            Path(checkpoint),
            {"device": device, "batch_size": batch_size},
        )
        self.stats = WorkerStats("torch", "wav2lip")
        self.worker = WorkerSupervisor(spec, label="Wav2Lip renderer", policy=policy, stats=self.stats)
        self.batch_size = max(1, batch_size)
        self.memory: dict[str, Any] = {}

    def load(self) -> dict[str, Any]:
        """Start the worker and load the checkpoint (blocking); raises ProviderError on failure."""
        info = self.worker.start_blocking().info
        self.memory = info["memory"]
        self.batch_size = info["batch_size"]
        return self.memory

    def predict(self, face6: np.ndarray, mels: np.ndarray, cache_key: str | None = None) -> np.ndarray:
        mouths, self.batch_size, allocated = self.worker.call_blocking("predict", face6, mels, cache_key)
        if allocated is not None and "cuda" in self.memory:
            self.memory = {**self.memory, "cuda": {**self.memory["cuda"], "allocated_bytes": allocated}}
        return mouths

    def memory_report(self) -> dict[str, Any]:
        return self.memory

    @property
    def pid(self) -> int | None:
        process = self.worker.process
        return process.pid if process is not None else None

    def stop(self) -> None:
        self.worker.stop()
