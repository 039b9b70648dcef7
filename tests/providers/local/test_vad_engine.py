"""Silero VAD in its worker process: the same probabilities as in this process, a shared
stateless worker, and a failed worker that degrades one batch to the energy detector."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

import numpy as np
import pytest

from gateway.realtime.vad import WINDOW, SpeechDetector, _silero
from providers.local import VAD_ENGINE
from providers.local.pool import ModelPool
from providers.local.vad_engine import initial_state, score_windows
from providers.local.workers.ipc import LoadSpec
from providers.wav import float_to_pcm16, resample
from tests.sounds import piper_speech

pytest.importorskip("faster_whisper")


@pytest.fixture
def pool() -> Iterator[ModelPool]:
    pool = ModelPool(2)
    yield pool
    pool.shutdown()


def _speech16k() -> np.ndarray:
    signal, rate = piper_speech("What time does the store open tomorrow?")
    audio = resample(signal, rate, 16000)
    return audio[: audio.size // WINDOW * WINDOW].reshape(-1, WINDOW)


def test_the_worker_scores_as_this_process_does(pool: ModelPool) -> None:
    worker = pool.supervisor(LoadSpec(VAD_ENGINE, "silero-vad", None, None), engine="vad", label="local:vad")
    windows = _speech16k()
    here, _ = score_windows(_silero(), windows, initial_state())
    there, state = worker.call_blocking("score", windows, initial_state())
    assert np.allclose(here, there, atol=1e-5)
    assert here.max() > 0.9 and here.min() < 0.1  # speech and the pauses around it
    # Stateless: a second stream from the start scores the same; the state continues a stream.
    again, state10 = worker.call_blocking("score", windows[:10], initial_state())
    assert np.allclose(again, here[:10], atol=1e-5)
    rest, _ = worker.call_blocking("score", windows[10:], state10)
    assert np.allclose(rest, here[10:], atol=1e-5)
    assert state[0].shape == (1, 1, 128)


def test_a_failing_scorer_degrades_to_energy_not_to_an_error() -> None:
    def broken(windows, state):  # type: ignore[no-untyped-def]
        raise ConnectionError("worker died")

    detector = SpeechDetector(0.5, 0, 200, scorer=broken)
    loud = float_to_pcm16(np.full(24000, 0.3, dtype=np.float32)).tobytes()
    quiet = bytes(24000)
    events = detector.feed(loud) + detector.feed(quiet)
    assert [name for name, _ in events] == ["speech_started", "speech_stopped"]


def test_sessions_share_one_worker(pool: ModelPool) -> None:
    worker = pool.supervisor(LoadSpec(VAD_ENGINE, "silero-vad", None, None), engine="vad", label="local:vad")
    scorer = partial(worker.call_blocking, "score")
    signal, rate = piper_speech("What time does the store open tomorrow?")
    pcm = float_to_pcm16(resample(signal, rate, 24000)).tobytes() + bytes(48000)
    detectors = [SpeechDetector(0.5, 300, 500, scorer=scorer) for _ in range(2)]
    results = [d.feed(pcm) for d in detectors]
    assert results[0] == results[1]
    assert [name for name, _ in results[0]] == ["speech_started", "speech_stopped"]
    assert worker.process is not None and worker.process.pid  # one process served both
