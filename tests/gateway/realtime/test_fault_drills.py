"""Fault drills in the middle of a realtime session, through the simulator's fault API: each
turn walks the fallback chains on its own, and the session survives every failure."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from providers.wav import float_to_pcm16, resample
from tests.conftest import SimHandle
from tests.gateway.realtime.test_realtime import SHORT, _audio_of, _client, _say, _until
from tests.sounds import piper_speech

QUESTION = "What time does the store open tomorrow?"


@pytest.fixture
def server(
    gateway_settings: Callable[..., Any], run_gateway: Callable[..., Any], sim: SimHandle
) -> Iterator[Any]:
    sim.control("PUT", "/sim/config", json={"answers": {"Say hi to Ada.": SHORT}}).raise_for_status()
    try:
        # A short per-attempt timeout so a hanging upstream is given up on quickly.
        yield run_gateway(gateway_settings(upstream_timeout_s=3.0))
    finally:
        sim.control("DELETE", "/sim/config")


def _served(events: list[Any]) -> dict[str, Any]:
    return events[-1].response.model_extra["talkgate"]


def test_llm_errors_mid_session_fall_over_then_recover(server: Any, sim: SimHandle) -> None:
    with _client(server).realtime.connect(model="gpt-realtime") as conn:
        conn.recv()
        first = _say(conn, "Say hi to Ada.")
        assert _served(first)["backend"] == "cloud"
        sim.clear_requests()
        sim.fault(service="generation", status=500, code="InternalError", times=50)
        second = _say(conn, "Say hi to Ada.")
        assert second[-1].response.status == "completed"
        assert _served(second)["providers"]["chat"].startswith("local:") and _served(second)["fallback"]
        assert _audio_of(second).size > 0  # spoken by whichever TTS answered
        # Every configured attempt went to the cloud first (retries), then the chain moved on.
        assert len(sim.requests("generation")) >= 1
        sim.clear_faults()
        third = _say(conn, "Say hi to Ada.")
        assert third[-1].response.status == "completed" and _served(third)["backend"] == "cloud"


def test_tts_socket_cut_mid_answer(server: Any, sim: SimHandle) -> None:
    with _client(server).realtime.connect(model="gpt-realtime") as conn:
        conn.recv()
        sim.clear_requests()
        sim.fault(service="tts", cut_after=1, times=1)
        events = _say(conn, "Say hi to Ada.")
        types = [e.type for e in events]
        done = events[-1].response
        tts_calls = sim.requests("tts")
        assert len(tts_calls) >= 1
        if done.status == "completed":  # the cut came before the first audio: another attempt spoke
            assert _audio_of(events).size > 0 and "error" not in types
        else:  # after the first audio: the response fails, nothing wrong is spoken
            assert done.status == "failed" and "error" in types
        again = _say(conn, "Say hi to Ada.")  # the session goes on
        assert again[-1].response.status == "completed" and _audio_of(again).size > 0


def test_asr_hang_falls_back_to_the_local_recogniser(server: Any, sim: SimHandle) -> None:
    signal, rate = piper_speech(QUESTION)
    pcm = float_to_pcm16(resample(signal, rate, 24000)).tobytes()
    with _client(server).realtime.connect(model="gpt-realtime") as conn:
        conn.recv()
        conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        conn.recv()
        sim.clear_requests()
        sim.fault(service="asr", hang=True, times=5)
        for start in range(0, len(pcm), 4800):
            conn.input_audio_buffer.append(audio=base64.b64encode(pcm[start : start + 4800]).decode())
        conn.input_audio_buffer.commit()
        heard = _until(conn, "conversation.item.input_audio_transcription.completed")[-1]
        words = heard.transcript.lower()
        assert "store" in words and "open" in words  # faster-whisper heard the question
        assert sim.requests("asr"), "the cloud recogniser was tried first"
        conn.response.create()
        answer = _until(conn, "response.done")
        assert answer[-1].response.status == "completed"
        assert np.all([e.type != "error" for e in answer])
