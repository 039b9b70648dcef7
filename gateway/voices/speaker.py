"""Same-speaker check: Resemblyzer d-vectors of the two recordings, compared by cosine similarity.

Why Resemblyzer: of the offline speaker-embedding packages it is the one whose weights ship inside
its PyPI wheel (``resemblyzer/pretrained.pt``, Apache-2.0); SpeechBrain, speakeronnx and
ReDimNet download theirs from a hub, which this project never does (reference voice-emotion.md
§6). It is older and weaker than ECAPA models, so it serves as a consistency check with a
threshold calibrated on our own same/different pairs (``voice_cloning.speaker_threshold``).

Torch runs in one spawned worker process, never in the gateway's address space: a crash there
fails this check ("error"), not the gateway. Where the package is missing the check reports
"unavailable", and the consent record says so.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import importlib.util
import multiprocessing
from typing import Any

import numpy as np

_POOL: concurrent.futures.ProcessPoolExecutor | None = None


def available() -> bool:
    return importlib.util.find_spec("resemblyzer") is not None


def _pool() -> concurrent.futures.ProcessPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    return _POOL


def _pkg_resources_shim() -> None:
    """webrtcvad 2.0.10 (a Resemblyzer dependency) reads its own version through ``pkg_resources``,
    which setuptools 81+ no longer ships; this worker supplies that one call from importlib.metadata."""
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        import importlib.metadata
        import sys
        import types

        shim = types.ModuleType("pkg_resources")
        shim.get_distribution = lambda name: types.SimpleNamespace(version=importlib.metadata.version(name))  # type: ignore[attr-defined]
        sys.modules["pkg_resources"] = shim


@functools.cache
def _encoder() -> Any:
    _pkg_resources_shim()
    import torch
    from resemblyzer import VoiceEncoder

    torch.set_num_threads(1)
    return VoiceEncoder("cpu", verbose=False)


def _embed(samples: np.ndarray, rate: int) -> np.ndarray:
    encoder = _encoder()  # first: it makes the resemblyzer package importable
    from resemblyzer import preprocess_wav

    return encoder.embed_utterance(preprocess_wav(samples, source_sr=rate))


def similarity_in_worker(a: bytes, b: bytes, rate: int) -> float:
    """Cosine similarity of two PCM16 mono recordings (runs in the worker process)."""
    ea = _embed(np.frombuffer(a, dtype="<i2").astype(np.float32) / 32768.0, rate)
    eb = _embed(np.frombuffer(b, dtype="<i2").astype(np.float32) / 32768.0, rate)
    return float(np.dot(ea, eb) / (np.linalg.norm(ea) * np.linalg.norm(eb) + 1e-9))


async def similarity(a: bytes, b: bytes, rate: int) -> float:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_pool(), similarity_in_worker, a, b, rate)


def shutdown() -> None:
    global _POOL
    if _POOL is not None:
        _POOL.shutdown(cancel_futures=True)
        _POOL = None
