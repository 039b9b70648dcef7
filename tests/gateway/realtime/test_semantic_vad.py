"""``semantic_vad`` turn detection, mapped onto the server VAD (gateway/realtime/events.py
``SEMANTIC_SILENCE_MS``): its eagerness decides how much silence ends a turn."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from gateway.realtime.events import SEMANTIC_SILENCE_MS
from tests.conftest import SimHandle
from tests.gateway.realtime.test_live_transcript import speech  # noqa: F401
from tests.gateway.realtime.test_realtime import _client, _until, server  # noqa: F401

RATE = 24000


def _append(conn: Any, pcm: bytes) -> None:
    step = RATE * 2 // 10
    for start in range(0, len(pcm), step):
        conn.input_audio_buffer.append(audio=base64.b64encode(pcm[start : start + step]).decode())


def _silence(ms: int) -> bytes:
    return bytes(RATE * 2 * ms // 1000)


@pytest.mark.parametrize("eagerness", ["high", "low"])
def test_eagerness_sets_the_silence_that_ends_a_turn(
    server: Any,  # noqa: F811
    sim: SimHandle,
    speech: bytes,  # noqa: F811
    eagerness: str,
) -> None:
    with _client(server).realtime.connect(model="gpt-realtime") as conn:
        conn.recv()
        turn_detection = {"type": "semantic_vad", "eagerness": eagerness, "create_response": False}
        conn.session.update(
            session={
                "type": "realtime",
                "output_modalities": ["text"],
                "audio": {"input": {"turn_detection": turn_detection}},
            }
        )
        updated = conn.recv()
        assert updated.type == "session.updated"
        described = updated.session.audio.input.turn_detection
        assert described.type == "semantic_vad" and described.eagerness == eagerness
        assert described.create_response is False and described.interrupt_response is True
        # The server VAD values it is mapped onto are not echoed as if the client had set them.
        assert getattr(described, "silence_duration_ms", None) is None
        # Speech, then a pause just longer than "high"'s silence but well short of "low"'s.
        pause = SEMANTIC_SILENCE_MS["high"] + 250
        _append(conn, _silence(300) + speech + _silence(pause))
        # A marker: a clear only answers once every append before it was handled.
        conn.input_audio_buffer.clear()
        events = _until(conn, "input_audio_buffer.cleared")
        types = [e.type for e in events]
        assert "input_audio_buffer.speech_started" in types
        if eagerness == "high":  # the pause ended the turn
            assert "input_audio_buffer.committed" in types
        else:  # "low" waits longer for the user to go on: the turn is still open
            assert "input_audio_buffer.speech_stopped" not in types


def test_bad_semantic_vad_values_are_refused(server: Any) -> None:  # noqa: F811
    with _client(server).realtime.connect(model="gpt-realtime") as conn:
        conn.recv()
        base = "session.audio.input.turn_detection"
        for bad, param in (
            ({"eagerness": "eager"}, f"{base}.eagerness"),
            ({"idle_timeout_ms": 5000}, f"{base}.idle_timeout_ms"),
            ({"create_response": "yes"}, f"{base}.create_response"),
        ):
            conn.session.update(
                session={
                    "type": "realtime",
                    "audio": {"input": {"turn_detection": {"type": "semantic_vad", **bad}}},
                }
            )
            refused = conn.recv()
            assert refused.type == "error" and refused.error.param == param, bad
