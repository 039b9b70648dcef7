"""Server VAD ``idle_timeout_ms`` (gateway/realtime/idle.py): a silent user gets a prompt to go on,
speech resets the wait, and bad values are refused. The official ``openai`` SDK's realtime client
against the gateway, with the simulator's LLM."""

from __future__ import annotations

import base64
import time
from typing import Any

from tests.conftest import SimHandle
from tests.gateway.realtime.test_live_transcript import _speak, speech  # noqa: F401
from tests.gateway.realtime.test_realtime import _client, _until, server  # noqa: F401

RATE = 24000


def _session(conn: Any, **vad: Any) -> Any:
    turn_detection = {"type": "server_vad", "idle_timeout_ms": 1000, **vad}
    conn.session.update(
        session={
            "type": "realtime",
            "output_modalities": ["text"],
            "audio": {"input": {"turn_detection": turn_detection}},
        }
    )
    return conn.recv()


def test_silence_past_the_timeout_commits_an_empty_turn_and_answers(server: Any, sim: SimHandle) -> None:  # noqa: F811
    with _client(server).realtime.connect(model="gpt-realtime") as conn:
        conn.recv()
        updated = _session(conn)
        armed = time.monotonic()
        assert updated.type == "session.updated"
        assert updated.session.audio.input.turn_detection.idle_timeout_ms == 1000
        conn.input_audio_buffer.append(audio=base64.b64encode(bytes(RATE * 2 * 3 // 2)).decode())  # 1.5 s
        timeout = conn.recv()
        waited = time.monotonic() - armed
        events = [timeout, *_until(conn, "response.done")]
    types = [e.type for e in events]
    assert types[:4] == [
        "input_audio_buffer.timeout_triggered",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
    ]
    assert 0.9 <= waited < 5, waited  # the timeout, not a moment earlier
    timeout, committed, added = events[:3]
    assert timeout.item_id == committed.item_id == added.item.id
    assert timeout.audio_end_ms == 1500 and timeout.audio_end_ms - timeout.audio_start_ms == 1000
    assert added.item.role == "user" and added.item.content[0].type == "input_audio"
    assert not added.item.content[0].transcript  # nothing was said, and no recogniser ran on silence
    assert sim.requests("asr") == []
    assert events[-1].response.status == "completed"
    answer = next(e.text for e in events if e.type == "response.output_text.done")
    assert "said nothing" in answer  # the model was told the user stayed silent (the sim echoes it)


def test_speech_resets_the_wait(server: Any, sim: SimHandle, speech: bytes) -> None:  # noqa: F811
    sim.control("PUT", "/sim/config", json={"asr_transcript": "When do you open?"}).raise_for_status()
    with _client(server).realtime.connect(model="gpt-realtime") as conn:
        conn.recv()
        updated = _session(conn, create_response=False, idle_timeout_ms=2000)
        assert updated.type == "session.updated"
        # Speech starts well within the timeout and lasts longer than it: no timeout while it goes on.
        _speak(conn, speech + speech)  # twice the question: about 4 s
        conn.input_audio_buffer.append(audio=base64.b64encode(bytes(RATE * 2 * 4 // 5)).decode())  # 0.8 s
        events = _until(conn, "input_audio_buffer.committed")
        assert "input_audio_buffer.timeout_triggered" not in [e.type for e in events]
        committed_at = time.monotonic()
        events = _until(conn, "input_audio_buffer.timeout_triggered")
        assert time.monotonic() - committed_at >= 1.9  # counted again from the end of the turn
        assert "response.created" not in [e.type for e in events]  # create_response false: no answer


def test_bad_idle_timeouts_are_refused(server: Any) -> None:  # noqa: F811
    with _client(server).realtime.connect(model="gpt-realtime") as conn:
        conn.recv()
        for bad in (10, 10**9, "1000", True, 1.5):
            refused = _session(conn, idle_timeout_ms=bad)
            assert refused.type == "error" and refused.error.code == "invalid_value", bad
            assert refused.error.param == "session.audio.input.turn_detection.idle_timeout_ms"
        fine = _session(conn, idle_timeout_ms=None)
        assert (
            fine.type == "session.updated" and fine.session.audio.input.turn_detection.idle_timeout_ms is None
        )
