"""Realtime sessions end to end: frame limits, telephony formats, who answered, metrics.

The official ``openai`` SDK's realtime client (or raw ``websockets`` for malformed traffic)
→ gateway (real uvicorn) → Bailian simulator, the local models behind it.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from providers.g711 import ulaw_decode, ulaw_encode
from tests.conftest import SimHandle
from tests.gateway.realtime.test_realtime import SHORT, _client, _say, _until, server  # noqa: F401
from tests.sounds import sine_pcm

URL = "ws://127.0.0.1:{port}/v1/realtime?model=gpt-realtime"


def _open(port: int) -> Any:
    ws = ws_connect(URL.format(port=port), max_size=None)
    assert json.loads(ws.recv(timeout=10))["type"] == "session.created"
    return ws


def test_frame_limits_and_an_idle_session(
    gateway_settings: Callable[..., Any], run_gateway: Callable[..., Any]
) -> None:
    limits = {"max_event_bytes": 2048, "idle_timeout_s": 1.5, "max_events_per_s": 5}
    gw = run_gateway(gateway_settings(realtime=limits))
    with _open(gw.port) as ws:
        big = json.dumps({"type": "input_audio_buffer.append", "audio": "A" * 4000})
        ws.send(big)
        error = json.loads(ws.recv(timeout=10))["error"]
        assert error["code"] == "event_too_large"
        codes = []
        for _ in range(14):  # a burst: 10 pass (twice the rate), then refusals
            ws.send(json.dumps({"type": "input_audio_buffer.clear"}))
        for _ in range(14):
            event = json.loads(ws.recv(timeout=10))
            codes.append(event["error"]["code"] if event["type"] == "error" else event["type"])
        assert codes.count("input_audio_buffer.cleared") in (10, 11)  # + what refilled meanwhile
        assert "rate_limit_exceeded" in codes
        started = time.monotonic()
        event = json.loads(ws.recv(timeout=10))  # nothing sent: the idle timeout closes the session
        assert event["type"] == "error" and event["error"]["code"] == "session_idle_timeout"
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
        assert 1.0 < time.monotonic() - started < 5.0


def test_an_abusive_client_is_disconnected(
    gateway_settings: Callable[..., Any], run_gateway: Callable[..., Any]
) -> None:
    gw = run_gateway(gateway_settings(realtime={"max_errors": 5}))
    with _open(gw.port) as ws:
        for _ in range(5):
            ws.send("{not json")
        with pytest.raises(ConnectionClosed) as info:
            for _ in range(10):
                ws.recv(timeout=10)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1008


def test_telephony_formats_in_and_out(server: Any, sim: SimHandle) -> None:  # noqa: F811
    """G.711 μ-law at 8 kHz both ways: committed audio is transcribed, answers come back as μ-law."""
    pcmu = {"type": "audio/pcmu"}
    with _client(server).realtime.connect(model="gpt-realtime") as conn:
        conn.recv()
        conn.session.update(
            session={"type": "realtime", "audio": {"input": {"format": pcmu}, "output": {"format": pcmu}}}
        )
        updated = conn.recv()
        assert updated.session.audio.input.format.type == "audio/pcmu"
        assert updated.session.audio.output.format.type == "audio/pcmu"
        line = ulaw_encode(sine_pcm(1.0, 8000, freq=300, peak=9000))
        assert len(line) == 8000  # one byte per sample
        for start in range(0, len(line), 160):  # 20 ms telephone frames
            conn.input_audio_buffer.append(audio=base64.b64encode(line[start : start + 160]).decode())
        conn.input_audio_buffer.commit()
        heard = _until(conn, "conversation.item.input_audio_transcription.completed")[-1]
        assert heard.usage.seconds == pytest.approx(1.0, abs=0.02)  # 8 kHz in, the same second
        _until(conn, "conversation.item.done")  # the audio item, now transcribed
        events = _say(conn, "Say hi to Ada.")
        wire = b"".join(base64.b64decode(e.delta) for e in events if e.type == "response.output_audio.delta")
        assert events[-1].response.audio.output.format.type == "audio/pcmu"
        pcm = np.frombuffer(ulaw_decode(wire), dtype="<i2")
        seconds = pcm.size / 8000
        assert 0.5 < seconds < 6.0, seconds  # "Hello Ada." spoken at 8 kHz
        assert np.abs(pcm).max() > 500


def test_every_turn_says_who_answered(server: Any, sim: SimHandle) -> None:  # noqa: F811
    with _client(server).realtime.connect(model="gpt-realtime") as conn:
        conn.recv()
        conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        conn.recv()
        cloud = _say(conn, "Say hi to Ada.")[-1].response
        served = cloud.model_extra["talkgate"]
        assert served["backend"] == "cloud" and served["fallback"] is False
        assert served["providers"]["chat"].startswith("bailian:")
        sim.fault(service="generation", status=500, code="InternalError", times=20)
        local = _say(conn, "Say hi to Ada.")[-1].response
        assert local.status == "completed"
        served = local.model_extra["talkgate"]
        assert served["backend"] == "local" and served["fallback"] is True
        assert served["providers"]["chat"].startswith("local:")
        metrics = httpx.get(f"{server.url}/metrics").text
        assert 'talkgate_realtime_turns_total{backend="cloud",status="completed"} 1.0' in metrics
        assert 'talkgate_realtime_turns_total{backend="local",status="completed"} 1.0' in metrics
        assert "talkgate_realtime_fallbacks_total 1.0" in metrics
        assert "talkgate_realtime_sessions_active 1.0" in metrics
        assert 'talkgate_realtime_stage_seconds_count{stage="llm_first_token"} 2.0' in metrics
