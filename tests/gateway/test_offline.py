"""Offline degraded mode: no DASHSCOPE_API_KEY, no network, every capability served by local models.

Also the cloud-side degraded state: /readyz says ``degraded`` while the breaker of a
capability's first cloud target is open, and TTS/ASR fail over to the local engines.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import SimHandle
from tests.gateway.resilience_support import ADMIN, fast, sdk
from tests.servers import ServerThread

pytestmark = pytest.mark.slow  # loads the local models


@pytest.fixture
def offline(
    gateway_settings: Callable[..., Any], run_gateway: Callable[..., ServerThread], sim: SimHandle
) -> ServerThread:
    settings = gateway_settings(
        **fast(
            ["bailian:qwen-plus", "local:smollm2"],
            # Local models on a busy 2-core runner: generous first-byte and stall limits.
            deadlines={"chat": 60.0, "asr": 60.0, "tts": 60.0, "first_byte": 15.0},
        ),
        dashscope_api_key=None,
        # Even if something tried, it would get nowhere: no route to this address.
        dashscope_http_base_url="http://192.0.2.1:9/api/v1",
        dashscope_websocket_base_url="ws://192.0.2.1:9/api-ws/v1/inference",
    )
    assert not settings.cloud_enabled
    return run_gateway(settings)


def test_starts_without_network_and_reports_degraded(offline: ServerThread, sim: SimHandle) -> None:
    r = httpx.get(f"{offline.url}/readyz", timeout=30)
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ready" and body["mode"] == "degraded" and body["degraded"] is True
    assert "DASHSCOPE_API_KEY" in body["reason"]
    assert body["providers"] == {"chat": ["local"], "asr": ["local"], "tts": ["local"]}
    assert sim.requests() == []


def test_chat_is_served_locally(offline: ServerThread, sim: SimHandle) -> None:
    client = sdk(offline)
    r = client.chat.completions.with_raw_response.create(
        model="qwen-plus", messages=[{"role": "user", "content": "Say hello."}], max_tokens=12
    )
    assert r.headers["x-talkgate-provider"] == "local:smollm2"
    assert r.headers["x-talkgate-fallback"] == "1"
    assert r.parse().choices[0].message.content.strip()
    stream = client.chat.completions.create(
        model="default", messages=[{"role": "user", "content": "Count to three."}], max_tokens=12, stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices).strip()
    assert sim.requests() == []


def test_speech_round_trip_is_served_locally(offline: ServerThread, sim: SimHandle) -> None:
    client = sdk(offline)
    speech = client.audio.speech.with_raw_response.create(
        model="tts-1", voice="alloy", input="The weather is nice today.", response_format="wav"
    )
    assert speech.headers["x-talkgate-provider"] == "local:piper-joe"
    wav = speech.content
    assert wav[:4] == b"RIFF" and len(wav) > 20_000
    text = client.audio.transcriptions.with_raw_response.create(
        model="whisper-1", file=("speech.wav", wav, "audio/wav")
    )
    assert text.headers["x-talkgate-provider"] == "local:whisper-tiny.en"
    assert "weather" in text.parse().text.lower()
    assert sim.requests() == []


def test_admin_view_explains_the_missing_cloud(offline: ServerThread) -> None:
    body = httpx.get(f"{offline.url}/admin/providers", headers=ADMIN, timeout=30).json()
    assert body["cloud_enabled"] is False
    row = next(r for r in body["capabilities"]["chat"] if r["target"] == "bailian:qwen-plus")
    assert row["configured"] is False and row["health"] == {"ok": False, "detail": "not configured"}


def test_open_cloud_breaker_makes_readyz_degraded_and_tts_fails_over(
    sim: SimHandle, gateway_settings: Callable[..., Any], run_gateway: Callable[..., ServerThread]
) -> None:
    gw = run_gateway(gateway_settings(**fast(retry={"attempts": 1})))
    assert httpx.get(f"{gw.url}/readyz", timeout=30).json()["mode"] == "cloud"
    sim.fault(service="tts", status=500)
    client = sdk(gw)
    for _ in range(3):
        r = client.audio.speech.with_raw_response.create(
            model="tts-1", voice="alloy", input="Hello there.", response_format="wav"
        )
        assert r.headers["x-talkgate-provider"] == "local:piper-joe"
        assert r.headers["x-talkgate-fallback"] == "1"
        assert r.content[:4] == b"RIFF"
    tts_calls = len(sim.requests("tts"))
    assert tts_calls == 3
    ready = httpx.get(f"{gw.url}/readyz", timeout=30).json()
    assert ready["mode"] == "degraded" and "bailian:cosyvoice-v2" in ready["reason"]
    client.audio.speech.create(model="tts-1", voice="alloy", input="Again.", response_format="wav")
    assert len(sim.requests("tts")) == tts_calls  # breaker open: no upstream call


def test_unknown_model_is_still_a_404_offline(offline: ServerThread) -> None:
    with pytest.raises(openai.NotFoundError):
        sdk(offline).chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "x"}]
        )
