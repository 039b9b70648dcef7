"""``nls:`` targets behind the gateway's OpenAI routes, in chains with Bailian, failing over both ways."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from policies.retry import RetrySettings
from tests.conftest import SimHandle
from tests.nls_support import nls_settings, reset_nls
from tests.sounds import tone_wav

ROUTES_NLS_FIRST = {
    "asr": {
        "chain": ["nls:transcriber-8k", "bailian:paraformer-realtime-v2"],
        "aliases": {"whisper-1": "transcriber-8k"},
    },
    "tts": {"chain": ["nls:synthesizer", "bailian:cosyvoice-v2"], "aliases": {"tts-1": "synthesizer"}},
}
ROUTES_BAILIAN_FIRST = {
    "asr": {"chain": ["bailian:paraformer-realtime-v2", "nls:transcriber-16k"]},
    "tts": {"chain": ["bailian:cosyvoice-v2", "nls:synthesizer"]},
}


@pytest.fixture
def gateway(
    sim: SimHandle, gateway_settings: Callable[..., Any], run_gateway: Any
) -> Iterator[Callable[..., Any]]:
    reset_nls(sim)
    sim.control("PUT", "/sim/config", json={"asr_transcript": "I would like to check my order."})
    clients: list[httpx.Client] = []

    def start(routes: dict[str, Any]) -> httpx.Client:
        settings = gateway_settings(
            nls=nls_settings(sim.nls_port), routes=routes, retry=RetrySettings(base_delay_s=0.01)
        )
        client = httpx.Client(base_url=run_gateway(settings).url, timeout=60)
        clients.append(client)
        return client

    yield start
    for client in clients:
        client.close()
    sim.control("DELETE", "/sim/config")
    reset_nls(sim)


def transcribe(client: httpx.Client, model: str) -> httpx.Response:
    return client.post(
        "/v1/audio/transcriptions", files={"file": ("call.wav", tone_wav(1.5))}, data={"model": model}
    )


def speak(client: httpx.Client, model: str) -> httpx.Response:
    body = {"model": model, "input": "Your order ships today.", "voice": "alloy", "response_format": "pcm"}
    return client.post("/v1/audio/speech", json=body)


def test_nls_serves_transcriptions_and_speech(sim: SimHandle, gateway: Any) -> None:
    client = gateway(ROUTES_NLS_FIRST)
    r = transcribe(client, "whisper-1")
    assert r.status_code == 200, r.text
    assert r.json()["text"] == "I would like to check my order."
    assert (r.headers["x-talkgate-provider"], r.headers["x-talkgate-fallback"]) == ("nls:transcriber-8k", "0")
    assert sim.requests("nls-asr")[-1]["body"]["payload"]["sample_rate"] == 8000
    r = speak(client, "tts-1")
    assert r.status_code == 200, r.text
    assert r.headers["x-talkgate-provider"] == "nls:synthesizer"
    samples = np.frombuffer(r.content, "<i2")
    assert len(samples) > 24000 * 0.5 and np.abs(samples).max() > 1000  # /v1/audio/speech pcm is 24 kHz
    assert not sim.requests("asr") and not sim.requests("tts")  # Bailian was not asked
    assert sim.nls.created == 1  # one token for both calls


def test_broken_nls_fails_over_to_bailian(sim: SimHandle, gateway: Any) -> None:
    client = gateway(ROUTES_NLS_FIRST)
    sim.fault(service="nls-asr", status=500)
    sim.fault(service="nls-tts", status=503)
    r = transcribe(client, "whisper-1")
    assert r.status_code == 200, r.text
    assert (r.headers["x-talkgate-provider"], r.headers["x-talkgate-fallback"]) == (
        "bailian:paraformer-realtime-v2",
        "1",
    )
    assert len(sim.requests("nls-asr")) >= 1
    r = speak(client, "tts-1")
    assert r.status_code == 200 and r.headers["x-talkgate-provider"] == "bailian:cosyvoice-v2"


def test_nls_token_failure_fails_over_to_bailian(sim: SimHandle, gateway: Any) -> None:
    client = gateway(ROUTES_NLS_FIRST)
    sim.fault(service="nls-token", status=403, code="Forbidden.RAM")
    r = transcribe(client, "whisper-1")
    assert r.status_code == 200 and r.headers["x-talkgate-provider"] == "bailian:paraformer-realtime-v2"
    assert [i["status"] for i in sim.requests("nls-token")] == [403]  # AUTH: not retried
    assert not sim.requests("nls-asr")


def test_broken_bailian_fails_over_to_nls(sim: SimHandle, gateway: Any) -> None:
    client = gateway(ROUTES_BAILIAN_FIRST)
    sim.fault(service="asr", status=500)
    sim.fault(service="tts", status=500)
    r = transcribe(client, "paraformer-realtime-v2")
    assert r.status_code == 200, r.text
    assert (r.headers["x-talkgate-provider"], r.headers["x-talkgate-fallback"]) == (
        "nls:transcriber-16k",
        "1",
    )
    assert r.json()["text"] == "I would like to check my order."
    r = speak(client, "cosyvoice-v2")
    assert r.status_code == 200 and r.headers["x-talkgate-provider"] == "nls:synthesizer"
    assert len(sim.requests("nls-asr")) == 1 and len(sim.requests("nls-tts")) == 1
