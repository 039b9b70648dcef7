"""/v1/realtime end to end: the official ``openai`` SDK's realtime client → gateway (real uvicorn)
→ Bailian simulator; malformed frames are sent with the ``websockets`` package directly."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import openai
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from tests.conftest import SimHandle
from tests.sounds import sine_pcm

SHORT = "Hello Ada."
LONG = (
    "Hello Ada. Our store opens at nine in the morning and closes at eight in the evening. "
    "Returns are accepted within thirty days with the receipt. Is there anything else I can do?"
)
AUDIO_SESSION = {
    "type": "realtime",
    "instructions": "You are a helpful shop assistant.",
    "output_modalities": ["audio"],
    "audio": {
        "input": {"format": {"type": "audio/pcm", "rate": 24000}, "turn_detection": None},
        "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "alloy"},
    },
    "max_output_tokens": 256,
    "temperature": 0.7,
}


@pytest.fixture
def server(
    gateway_settings: Callable[..., Any], run_gateway: Callable[..., Any], sim: SimHandle
) -> Iterator[Any]:
    answers = {"Say hi to Ada.": SHORT, "Tell me about the store.": LONG}
    sim.control("PUT", "/sim/config", json={"answers": answers}).raise_for_status()
    try:
        yield run_gateway(gateway_settings())
    finally:
        sim.control("DELETE", "/sim/config")


def _client(server: Any) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{server.url}/v1",
        websocket_base_url=f"ws://127.0.0.1:{server.port}/v1",
        api_key="sk-unused",
        max_retries=0,
    )


def _until(conn: Any, last: str) -> list[Any]:
    """Events up to and including the first of type ``last``."""
    events = []
    while True:
        event = conn.recv()
        events.append(event)
        if event.type == last:
            return events


def _say(conn: Any, text: str) -> list[Any]:
    conn.conversation.item.create(
        item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    )
    added = _until(conn, "conversation.item.done")
    assert [e.type for e in added] == ["conversation.item.added", "conversation.item.done"]
    assert added[1].item.content[0].text == text
    conn.response.create()
    return _until(conn, "response.done")


def _audio_of(events: list[Any]) -> np.ndarray:
    pcm = b"".join(base64.b64decode(e.delta) for e in events if e.type == "response.output_audio.delta")
    assert len(pcm) % 2 == 0
    return np.frombuffer(pcm, dtype="<i2")


def test_spoken_turns_share_one_conversation(server: Any, sim: SimHandle) -> None:
    with _client(server).realtime.connect(model="gpt-realtime") as conn:
        created = conn.recv()
        assert created.type == "session.created" and created.session.audio.input.turn_detection is None
        conn.session.update(session=AUDIO_SESSION)
        updated = conn.recv()
        assert updated.type == "session.updated"
        assert updated.session.instructions == AUDIO_SESSION["instructions"]
        assert updated.session.max_output_tokens == 256

        first = _say(conn, "Say hi to Ada.")
        types = [e.type for e in first]
        assert types[0] == "response.created" and "error" not in types
        assert types.index("response.output_item.added") < types.index("response.output_audio.delta")
        assert types[-6:] == [
            "response.output_audio.done",
            "response.output_audio_transcript.done",
            "response.content_part.done",
            "response.output_item.done",
            "conversation.item.done",
            "response.done",
        ]
        deltas = "".join(e.delta for e in first if e.type == "response.output_audio_transcript.delta")
        transcript = next(e.transcript for e in first if e.type == "response.output_audio_transcript.done")
        assert deltas == transcript == SHORT
        done = first[-1].response
        assert done.status == "completed" and done.output[0].content[0].transcript == SHORT
        assert done.usage.output_tokens > 0 and done.usage.input_tokens > 0
        short_audio = _audio_of(first)
        assert short_audio.size > 0 and np.abs(short_audio).max() > 100  # audible, not silence

        sim.clear_requests()
        second = _say(conn, "Tell me about the store.")
        assert second[-1].response.status == "completed"
        long_audio = _audio_of(second)
        assert long_audio.size > 2 * short_audio.size  # the duration grows with the transcript
        sent = json.dumps(sim.requests("generation"))
        assert "Say hi to Ada." in sent and SHORT in sent and AUDIO_SESSION["instructions"] in sent
        assert sim.requests("tts")


def test_text_output_and_audio_input(server: Any, sim: SimHandle) -> None:
    with _client(server).realtime.connect(model="gpt-realtime") as conn:
        conn.recv()
        conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        assert conn.recv().type == "session.updated"
        pcm = sine_pcm(1.2, 24000, freq=220, peak=9000)
        chunk = 24000 * 2 // 20  # 50 ms
        for start in range(0, len(pcm), chunk):
            conn.input_audio_buffer.append(audio=base64.b64encode(pcm[start : start + chunk]).decode())
        conn.input_audio_buffer.commit()
        events = _until(conn, "conversation.item.input_audio_transcription.completed")
        committed = events[0]
        assert committed.type == "input_audio_buffer.committed"
        heard = events[-1]
        assert heard.item_id == committed.item_id and heard.transcript.startswith(
            "This is a simulated transcript"
        )
        assert heard.usage.type == "duration" and heard.usage.seconds == pytest.approx(1.2, abs=0.01)
        assert sim.requests("asr")
        conn.response.create()
        answer = _until(conn, "response.done")
        assert not any(e.type.startswith("response.output_audio") for e in answer)
        text = next(e.text for e in answer if e.type == "response.output_text.done")
        assert heard.transcript in text  # the simulator echoes the (transcribed) question

        conn.input_audio_buffer.append(audio=base64.b64encode(pcm[:4800]).decode())
        conn.input_audio_buffer.clear()
        assert _until(conn, "input_audio_buffer.cleared")[-1].type == "input_audio_buffer.cleared"
        conn.input_audio_buffer.commit()  # empty now
        assert conn.recv().error.code == "input_audio_buffer_commit_empty"


def test_response_cancel(server: Any, sim: SimHandle) -> None:
    sim.control("PUT", "/sim/config", json={"token_delay_ms": 50}).raise_for_status()
    with _client(server).realtime.connect(model="gpt-realtime") as conn:
        conn.recv()
        conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        conn.recv()
        conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": LONG * 3}]}
        )
        _until(conn, "conversation.item.done")
        conn.response.create()
        _until(conn, "response.output_text.delta")
        conn.response.cancel()
        done = _until(conn, "response.done")[-1].response
        assert done.status == "cancelled" and done.status_details.reason == "client_cancelled"
        conn.response.cancel()  # nothing left to cancel
        assert conn.recv().error.code == "response_cancel_not_active"
        # The session is still usable after a cancel.
        conn.session.update(session={"type": "realtime", "instructions": "Be brief."})
        assert conn.recv().type == "session.updated"


def test_failure_before_output_keeps_the_session(server: Any, sim: SimHandle) -> None:
    sim.fault(service="generation", status=400, code="InvalidParameter", times=1)
    with _client(server).realtime.connect(model="gpt-realtime") as conn:
        conn.recv()
        conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        conn.recv()
        events = _say(conn, "Say hi to Ada.")
        types = [e.type for e in events]
        assert types == ["response.created", "error", "response.done"]
        assert events[-1].response.status == "failed" and events[-1].response.output == []
        again = _say(conn, "Say hi to Ada.")
        assert again[-1].response.status == "completed"


def test_bad_input_is_answered_with_errors(server: Any) -> None:
    with ws_connect(f"ws://127.0.0.1:{server.port}/v1/realtime?model=gpt-realtime") as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "session.created"

        def ask(frame: str) -> dict[str, Any]:
            ws.send(frame)
            event = json.loads(ws.recv(timeout=10))
            assert event["type"] == "error", event
            return event["error"]

        assert ask("{not json")["code"] == "invalid_json"
        assert ask("[1, 2]")["code"] == "invalid_event"
        unknown = ask(json.dumps({"type": "no.such.event", "event_id": "e1"}))
        assert unknown["code"] == "unknown_event" and "no.such.event" in unknown["message"]
        assert unknown["event_id"] == "e1"
        assert (
            ask(json.dumps({"type": "input_audio_buffer.append", "audio": "%%%"}))["code"] == "invalid_base64"
        )
        odd = base64.b64encode(b"abc").decode()
        assert ask(json.dumps({"type": "input_audio_buffer.append", "audio": odd}))["code"] == "invalid_audio"
        vad = {
            "type": "session.update",
            "session": {"audio": {"input": {"turn_detection": {"type": "vad_of_my_own"}}}},
        }
        error = ask(json.dumps(vad))
        assert error["code"] == "unsupported_turn_detection" and "server_vad" in error["message"]
        for fmt in ({"type": "audio/opus"}, {"type": "audio/pcm", "rate": 16000}, "mp3"):
            update = {"type": "session.update", "session": {"audio": {"output": {"format": fmt}}}}
            assert ask(json.dumps(update))["code"] == "unsupported_audio_format"
        assert ask(json.dumps({"type": "conversation.item.truncate"}))["code"] == "item_not_found"
        assert ask(json.dumps({"type": "conversation.item.retrieve"}))["code"] == "unknown_event"
        bad_item = {
            "type": "conversation.item.create",
            "item": {"type": "message", "role": "user", "content": []},
        }
        assert ask(json.dumps(bad_item))["param"] == "item.content"
        # Still open and working.
        ws.send(
            json.dumps({"type": "session.update", "session": {"type": "realtime", "instructions": "Hi."}})
        )
        assert json.loads(ws.recv(timeout=10))["type"] == "session.updated"


def test_the_input_buffer_is_bounded_by_the_shared_audio_limit(
    gateway_settings: Callable[..., Any], run_gateway: Callable[..., Any]
) -> None:
    """``limits.audio_max_seconds.realtime`` (gateway/inputs/audio.py's per-surface limit)."""
    server = run_gateway(gateway_settings(limits={"audio_max_seconds": {"realtime": 1.0}}))
    second = base64.b64encode(b"\x00\x01" * 24000).decode()  # 1 s of 24 kHz pcm16
    with ws_connect(f"ws://127.0.0.1:{server.port}/v1/realtime?model=gpt-realtime") as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "session.created"
        ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": second}))
        ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": second[:400]}))
        error = json.loads(ws.recv(timeout=10))
        assert error["type"] == "error" and error["error"]["code"] == "input_audio_buffer_full"
        assert "(1 s)" in error["error"]["message"]
        ws.send(json.dumps({"type": "input_audio_buffer.clear"}))
        assert json.loads(ws.recv(timeout=10))["type"] == "input_audio_buffer.cleared"


def test_unknown_model_is_refused_at_the_upgrade(server: Any) -> None:
    with pytest.raises(InvalidStatus) as info:
        ws_connect(f"ws://127.0.0.1:{server.port}/v1/realtime?model=no-such-model").close()
    assert info.value.response.status_code == 404
    assert json.loads(info.value.response.body)["error"]["code"] == "model_not_found"


def test_keys_are_checked_before_the_upgrade(
    gateway_settings: Callable[..., Any], run_gateway: Callable[..., Any]
) -> None:
    gw = run_gateway(gateway_settings(admin_key="sk-admin-realtime"))
    url = f"ws://127.0.0.1:{gw.port}/v1/realtime?model=gpt-realtime"
    for headers in ({}, {"Authorization": "Bearer sk-wrong"}):
        with pytest.raises(InvalidStatus) as info:
            ws_connect(url, additional_headers=headers).close()
        assert info.value.response.status_code == 401
        assert json.loads(info.value.response.body)["error"]["code"] == "invalid_api_key"
    with ws_connect(url, additional_headers={"Authorization": "Bearer sk-admin-realtime"}) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "session.created"
