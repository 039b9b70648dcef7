"""Silero VAD inside an engine worker (worker side only): speech probabilities of 32 ms windows.

The model is the ONNX file that ships inside faster-whisper. It runs in a worker like every
local engine, because onnxruntime is native code: a crash there must end one worker, not the
gateway (design.md). The worker is stateless across calls: the LSTM state and the 64-sample
context travel with each call, so one worker serves every realtime session, and a restarted
worker picks up where the last one stopped.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from providers.local.models import unavailable
from providers.local.workers.ipc import LoadSpec

CONTEXT = 64  # samples of the previous window Silero sees in front of each new one


def initial_state() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(h, c, context) of a stream that has not started."""
    return (
        np.zeros((1, 1, 128), dtype=np.float32),
        np.zeros((1, 1, 128), dtype=np.float32),
        np.zeros((1, CONTEXT), dtype=np.float32),
    )


def score_windows(
    session: Any, windows: np.ndarray, state: tuple[Any, ...]
) -> tuple[np.ndarray, tuple[Any, ...]]:
    """Probabilities of ``windows`` ([n, 512] float32 at 16 kHz) and the state after them."""
    h, c, context = state
    probs = np.empty(len(windows), dtype=np.float32)
    for i, window in enumerate(windows):
        batch = window[None, :]
        out, h, c = session.run(None, {"input": np.concatenate([context, batch], 1), "h": h, "c": c})
        context = batch[:, -CONTEXT:]
        probs[i] = float(np.ravel(out)[0])
    return probs, (h, c, context)


class SileroVadEngine:
    methods = frozenset({"score"})

    def __init__(self, spec: LoadSpec) -> None:
        try:
            from faster_whisper.vad import get_vad_model

            self.session = get_vad_model().session
        except Exception as exc:
            raise unavailable(f"Silero VAD: faster-whisper's model cannot be loaded: {exc}") from exc

    def info(self) -> dict[str, Any]:
        return {"window": 512, "rate": 16000}

    def score(
        self, windows: np.ndarray, state: tuple[Any, ...], *, cancelled: threading.Event
    ) -> tuple[np.ndarray, tuple[Any, ...]]:
        return score_windows(self.session, windows, state)
