"""Retries, circuit breakers and failover, end to end: the real gateway, the real simulator with
injected faults, and the official ``openai`` SDK (or raw httpx for SSE framing).

Every test checks both what the client saw and how many calls reached the upstream
(``sim.requests()``), because a resilience policy is only right if it spends the upstream
calls it should and no more.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import httpx
import openai
import orjson
import pytest

from tests.conftest import SimHandle
from tests.gateway import resilience_support
from tests.gateway.resilience_support import (
    LOCAL_CHAIN,
    USER,
    chat,
    events_of,
    fast,
    sdk,
    sse,
    upstream,
)
from tests.servers import ServerThread, free_port

# shared fixture: a factory of real gateways with the given settings
gateway = resilience_support.gateway

# --------------------------------------------------------------------------- retries


def test_500s_are_retried_then_succeed(sim: SimHandle, gateway: Callable[..., ServerThread]) -> None:
    gw = gateway(**fast())
    sim.fault(service="generation", model="qwen-plus", status=500, times=2)
    r = chat(gw)
    assert r.http_response.status_code == 200
    assert r.headers["x-talkgate-provider"] == "bailian:qwen-plus"
    assert r.headers["x-talkgate-fallback"] == "0"
    assert r.parse().choices[0].message.content
    assert len(upstream(sim, "qwen-plus")) == 3 and upstream(sim, "qwen-turbo") == []


def test_persistent_500s_fail_over_after_the_retries(
    sim: SimHandle, gateway: Callable[..., ServerThread]
) -> None:
    gw = gateway(**fast())
    sim.fault(service="generation", model="qwen-plus", status=500)
    r = chat(gw)
    assert r.http_response.status_code == 200
    assert r.headers["x-talkgate-provider"] == "bailian:qwen-turbo"
    assert r.headers["x-talkgate-fallback"] == "1"
    assert len(upstream(sim, "qwen-plus")) == 3  # settings.retry.attempts
    assert len(upstream(sim, "qwen-turbo")) == 1


def test_persistent_500s_fail_over_to_the_local_model(
    sim: SimHandle, gateway: Callable[..., ServerThread]
) -> None:
    gw = gateway(**fast(LOCAL_CHAIN))
    sim.fault(service="generation", model="qwen-plus", status=500)
    r = chat(gw)
    assert r.http_response.status_code == 200
    assert r.headers["x-talkgate-provider"] == "local:smollm2"
    assert r.headers["x-talkgate-fallback"] == "1"
    assert r.parse().choices[0].message.content.strip()
    assert len(upstream(sim)) == 3


def test_429_retry_after_is_honoured(sim: SimHandle, gateway: Callable[..., ServerThread]) -> None:
    gw = gateway(**fast())
    sim.fault(service="generation", model="qwen-plus", status=429, retry_after=1, times=1)
    r = chat(gw)
    assert r.headers["x-talkgate-provider"] == "bailian:qwen-plus"
    calls = upstream(sim, "qwen-plus")
    assert len(calls) == 2
    assert calls[1]["time"] - calls[0]["time"] >= 1.0  # waited as told, not the 10 ms backoff


def test_retry_after_beyond_the_cap_fails_over_at_once(
    sim: SimHandle, gateway: Callable[..., ServerThread]
) -> None:
    gw = gateway(**fast())
    sim.fault(service="generation", model="qwen-plus", status=429, retry_after=30)
    started = time.monotonic()
    r = chat(gw)
    assert time.monotonic() - started < 10
    assert r.headers["x-talkgate-provider"] == "bailian:qwen-turbo"
    assert len(upstream(sim, "qwen-plus")) == 1


def test_hang_past_the_attempt_timeout_fails_over_in_bounded_time(
    sim: SimHandle, gateway: Callable[..., ServerThread]
) -> None:
    gw = gateway(**fast(upstream_timeout_s=0.5, retry={"attempts": 2, "base_delay_s": 0.01}))
    sim.fault(service="generation", model="qwen-plus", hang=True)
    started = time.monotonic()
    r = chat(gw)
    elapsed = time.monotonic() - started
    assert r.headers["x-talkgate-provider"] == "bailian:qwen-turbo"
    assert r.headers["x-talkgate-fallback"] == "1"
    assert 1.0 <= elapsed < 5.0  # two 0.5 s attempts, then the fallback
    assert len(upstream(sim, "qwen-plus")) == 2


def test_hang_with_no_fallback_ends_at_the_deadline(
    sim: SimHandle, gateway: Callable[..., ServerThread]
) -> None:
    gw = gateway(**fast(["bailian:qwen-plus"], deadlines={"chat": 2.0, "first_byte": 1.0}))
    sim.fault(service="generation", model="qwen-plus", hang=True)
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as info:
        chat(gw)
    assert time.monotonic() - started < 5.0
    assert info.value.status_code == 504
    assert "deadline" in info.value.message and "bailian:qwen-plus" in info.value.message
    # 1 s per upstream call (upstream_timeout_s) in a 2 s budget: the first attempt times out, one
    # retry gets the remaining ~1 s (room for it to reach the simulator on a loaded machine), and
    # no third attempt starts once the budget is spent.
    assert len(upstream(sim, "qwen-plus")) == 2
    assert upstream(sim) == upstream(sim, "qwen-plus")


def test_connection_refused_names_every_target(gateway: Callable[..., ServerThread], sim: SimHandle) -> None:
    closed = f"http://127.0.0.1:{free_port()}/api/v1"
    gw = gateway(**fast(), dashscope_http_base_url=closed)
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as info:
        chat(gw)
    assert time.monotonic() - started < 10
    assert info.value.status_code == 503
    message = info.value.message
    assert "bailian:qwen-plus:" in message and "bailian:qwen-turbo:" in message
    assert upstream(sim) == []


def test_connection_refused_falls_back_to_local(gateway: Callable[..., ServerThread]) -> None:
    gw = gateway(**fast(LOCAL_CHAIN), dashscope_http_base_url=f"http://127.0.0.1:{free_port()}/api/v1")
    r = chat(gw)
    assert r.headers["x-talkgate-provider"] == "local:smollm2"
    assert r.headers["x-talkgate-fallback"] == "1"


# --------------------------------------------------------------------------- what never falls back


def test_data_inspection_failed_is_returned_not_bypassed(
    sim: SimHandle, gateway: Callable[..., ServerThread]
) -> None:
    gw = gateway(**fast(LOCAL_CHAIN))
    events = events_of(gw)
    sim.fault(
        service="generation",
        status=400,
        code="DataInspectionFailed",
        message="Input data may contain inappropriate content.",
    )
    for stream in (False, True):
        r = httpx.post(
            f"{gw.url}/v1/chat/completions",
            json={"model": "qwen-plus", "messages": USER, "stream": stream},
            timeout=30,
        )
        assert r.status_code == 400
        error = r.json()["error"]
        assert error["code"] == "content_filter" and error["type"] == "content_filter"
    assert len(upstream(sim)) == 2  # one call each, not retried
    tried = {f["target"] for e, f in events if e == "attempt"}
    assert tried == {"bailian:qwen-plus"}  # the local model was never asked
    assert not [e for e, _ in events if e == "fallback"]


def test_invalid_api_key_falls_back_and_is_logged(
    sim: SimHandle, gateway: Callable[..., ServerThread], caplog: pytest.LogCaptureFixture
) -> None:
    gw = gateway(**fast())
    sim.fault(service="generation", model="qwen-plus", status=401)
    with caplog.at_level(logging.ERROR, logger="talkgate.routing"):
        r = chat(gw)
    assert r.headers["x-talkgate-provider"] == "bailian:qwen-turbo"
    assert len(upstream(sim, "qwen-plus")) == 1  # credentials do not heal on retry
    logged = [rec.getMessage() for rec in caplog.records if rec.levelno >= logging.ERROR]
    assert any("InvalidApiKey" in m and "bailian:qwen-plus" in m for m in logged)


# --------------------------------------------------------------------------- streams


def test_stream_cut_after_k_chunks_ends_with_an_error_event(
    sim: SimHandle, gateway: Callable[..., ServerThread]
) -> None:
    gw = gateway(**fast(LOCAL_CHAIN))
    sim.fault(service="generation", model="qwen-plus", cut_after=2)
    r = httpx.post(
        f"{gw.url}/v1/chat/completions",
        json={"model": "qwen-plus", "messages": USER, "stream": True, "max_tokens": 50},
        timeout=30,
    )
    assert r.status_code == 200
    assert r.headers["x-talkgate-provider"] == "bailian:qwen-plus"
    events = sse(r.text)
    assert "[DONE]" not in events
    chunks = [orjson.loads(e) for e in events]
    assert "error" in chunks[-1]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1] if c.get("choices"))
    assert text  # the client got the part that arrived before the cut
    assert len(upstream(sim)) == 1  # no retry and no failover once bytes reached the client


def test_stream_cut_is_an_sdk_error_not_a_clean_end(
    sim: SimHandle, gateway: Callable[..., ServerThread]
) -> None:
    gw = gateway(**fast())
    sim.fault(service="generation", model="qwen-plus", cut_after=2, status=500)
    stream = sdk(gw).chat.completions.create(model="qwen-plus", messages=USER, stream=True, max_tokens=50)
    with pytest.raises(openai.APIError):
        for _ in stream:
            pass
    assert len(upstream(sim)) == 1


def test_stream_failing_before_first_byte_fails_over_transparently(
    sim: SimHandle, gateway: Callable[..., ServerThread]
) -> None:
    gw = gateway(**fast(retry={"attempts": 1}))
    sim.fault(service="generation", model="qwen-plus", status=503, code="ServiceUnavailable")
    with sdk(gw).chat.completions.with_streaming_response.create(
        model="qwen-plus", messages=USER, stream=True, max_tokens=20
    ) as response:
        assert response.headers["x-talkgate-provider"] == "bailian:qwen-turbo"
        assert response.headers["x-talkgate-fallback"] == "1"
        text = "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices)
    assert text
    assert [c["model"] for c in upstream(sim)] == ["qwen-plus", "qwen-turbo"]


def test_stream_first_byte_timeout_fails_over(sim: SimHandle, gateway: Callable[..., ServerThread]) -> None:
    gw = gateway(**fast(retry={"attempts": 1}, deadlines={"chat": 20.0, "first_byte": 0.5}))
    sim.fault(service="generation", model="qwen-plus", latency_ms=5000)
    started = time.monotonic()
    r = httpx.post(
        f"{gw.url}/v1/chat/completions",
        json={"model": "qwen-plus", "messages": USER, "stream": True, "max_tokens": 20},
        timeout=30,
    )
    assert time.monotonic() - started < 4.0
    assert r.headers["x-talkgate-provider"] == "bailian:qwen-turbo"
    assert sse(r.text)[-1] == "[DONE]"
    assert [c["model"] for c in upstream(sim)] == ["qwen-plus", "qwen-turbo"]


# --------------------------------------------------------------------------- speech


@pytest.mark.slow
def test_asr_failure_fails_over_to_local_whisper(
    sim: SimHandle, gateway: Callable[..., ServerThread]
) -> None:
    gw = gateway(**fast(retry={"attempts": 2, "base_delay_s": 0.01}))
    client = sdk(gw)
    wav = client.audio.speech.create(
        model="piper-joe", voice="joe", input="Please call me back tomorrow.", response_format="wav"
    ).content
    sim.fault(service="asr", status=500)
    r = client.audio.transcriptions.with_raw_response.create(
        model="whisper-1", file=("a.wav", wav, "audio/wav")
    )
    assert r.headers["x-talkgate-provider"] == "local:whisper-tiny.en"
    assert r.headers["x-talkgate-fallback"] == "1"
    assert "call me back" in r.parse().text.lower()
    assert len(sim.requests("asr")) == 2  # both attempts reached the cloud first


def test_a_qwen_voice_falls_over_to_cosyvoice_with_its_default_voice(
    sim: SimHandle, gateway: Callable[..., ServerThread]
) -> None:
    """qwen-tts fails; CosyVoice, next in the chain, does not know "Cherry" (it would answer 400 and
    stop the chain): it speaks with its default voice instead, and the request is answered."""
    gw = gateway(**fast(retry={"attempts": 1}))
    sim.fault(service="tts", model="qwen-tts", status=500, times=10)
    r = sdk(gw).audio.speech.with_raw_response.create(
        model="qwen-tts", voice="Cherry", input="Your order has shipped.", response_format="wav"
    )
    assert (
        r.headers["x-talkgate-provider"] == "bailian:cosyvoice-v2" and r.headers["x-talkgate-fallback"] == "1"
    )
    assert len(r.content) > 10_000
    run = [
        q for q in sim.requests("tts") if (q.get("body") or {}).get("header", {}).get("action") == "run-task"
    ]
    assert run and run[-1]["body"]["payload"]["parameters"]["voice"] == "longxiaochun_v2"
