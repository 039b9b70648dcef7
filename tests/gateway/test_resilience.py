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
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import openai
import orjson
import pytest

from tests.conftest import SimHandle
from tests.servers import ServerThread, free_port

USER = [{"role": "user", "content": "hello there"}]
CLOUD_CHAIN = ["bailian:qwen-plus", "bailian:qwen-turbo"]
LOCAL_CHAIN = ["bailian:qwen-plus", "local:smollm2"]


def fast(chain: list[str] = CLOUD_CHAIN, **overrides: Any) -> dict[str, Any]:
    """Small timings so the suite stays fast; each test overrides what it exercises."""
    settings: dict[str, Any] = {
        "auth": "none",
        "cache": {"enabled": False},
        "retry": {"attempts": 3, "base_delay_s": 0.01, "max_delay_s": 0.05, "max_retry_after_s": 3.0},
        "breaker": {
            "window_s": 30.0,
            "min_calls": 100,
            "consecutive_failures": 3,
            "cooldown_s": 1.0,
            "max_cooldown_s": 4.0,
        },
        "deadlines": {"chat": 20.0, "asr": 20.0, "tts": 20.0, "first_byte": 1.0},
        "upstream_timeout_s": 1.0,
        "routes": {
            "chat": {"chain": chain, "aliases": {"default": "qwen-plus"}},
            "asr": {
                "chain": ["bailian:paraformer-realtime-v2", "local:whisper-tiny.en"],
                "aliases": {"whisper-1": "paraformer-realtime-v2"},
            },
            "tts": {
                "chain": ["bailian:cosyvoice-v2", "local:piper-joe"],
                "aliases": {"tts-1": "cosyvoice-v2"},
            },
        },
    }
    settings.update(overrides)
    return settings


def sdk(gw: ServerThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key="sk-unused", max_retries=0, timeout=30)


def chat(gw: ServerThread, **kw: Any) -> Any:
    """A plain completion through the SDK; returns the raw response (headers + parsed body)."""
    kw.setdefault("max_tokens", 8)
    return sdk(gw).chat.completions.with_raw_response.create(model="qwen-plus", messages=USER, **kw)


def upstream(sim: SimHandle, model: str | None = None) -> list[dict[str, Any]]:
    calls = sim.requests("generation")
    return [c for c in calls if model is None or c["model"] == model]


def services_of(gw: ServerThread) -> Any:
    return gw.server.config.app.state.services


def events_of(gw: ServerThread) -> list[tuple[str, dict[str, Any]]]:
    events: list[tuple[str, dict[str, Any]]] = []
    services_of(gw).router.listeners.append(lambda e, f: events.append((e, f)))
    return events


def sse(text: str) -> list[str]:
    return [b.removeprefix("data: ") for b in text.split("\n\n") if b.startswith("data: ")]


@pytest.fixture
def gateway(gateway_settings: Callable[..., Any], run_gateway: Callable[..., ServerThread]):
    def start(**overrides: Any) -> ServerThread:
        return run_gateway(gateway_settings(**overrides))

    return start


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
    gw = gateway(**fast(["bailian:qwen-plus"], deadlines={"chat": 1.5, "first_byte": 1.0}))
    sim.fault(service="generation", model="qwen-plus", hang=True)
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as info:
        chat(gw)
    assert time.monotonic() - started < 5.0
    assert info.value.status_code == 504
    assert "deadline" in info.value.message and "bailian:qwen-plus" in info.value.message


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


# --------------------------------------------------------------------------- circuit breaker


def breaker_row(gw: ServerThread, target: str, capability: str = "chat") -> dict[str, Any]:
    body = httpx.get(f"{gw.url}/admin/providers", timeout=10).json()
    return next(r for r in body["capabilities"][capability] if r["target"] == target)


def test_open_breaker_skips_upstream_until_one_probe_closes_it(
    sim: SimHandle, gateway: Callable[..., ServerThread]
) -> None:
    gw = gateway(**fast(retry={"attempts": 1}))
    events = events_of(gw)
    sim.fault(service="generation", model="qwen-plus", status=500)
    for _ in range(3):  # three consecutive failures trip it
        assert chat(gw).headers["x-talkgate-provider"] == "bailian:qwen-turbo"
    assert len(upstream(sim, "qwen-plus")) == 3
    row = breaker_row(gw, "bailian:qwen-plus")
    assert row["breaker"]["state"] == "open" and row["breaker"]["cooldown_remaining_s"] > 0

    for _ in range(5):  # open: served by the fallback with zero upstream calls
        assert chat(gw).headers["x-talkgate-provider"] == "bailian:qwen-turbo"
    assert len(upstream(sim, "qwen-plus")) == 3
    assert [f["reason"] for e, f in events if e == "skip"] == ["circuit open"] * 5

    # The upstream heals; after the cooldown exactly one probe goes up while the others still
    # fall back. The probe is made slow so the concurrent requests overlap it.
    sim.clear_faults()
    sim.fault(service="generation", model="qwen-plus", latency_ms=600, times=1)
    time.sleep(row["breaker"]["cooldown_remaining_s"] + 0.1)
    with ThreadPoolExecutor(6) as pool:
        first = pool.submit(chat, gw)
        time.sleep(0.2)
        others = [pool.submit(chat, gw) for _ in range(5)]
        providers = [first.result().headers["x-talkgate-provider"]] + [
            f.result().headers["x-talkgate-provider"] for f in others
        ]
    assert providers[0] == "bailian:qwen-plus"
    assert providers[1:] == ["bailian:qwen-turbo"] * 5
    assert len(upstream(sim, "qwen-plus")) == 4  # the single probe
    assert breaker_row(gw, "bailian:qwen-plus")["breaker"]["state"] == "closed"

    for _ in range(3):  # traffic is back on the cloud's first target
        r = chat(gw)
        assert (r.headers["x-talkgate-provider"], r.headers["x-talkgate-fallback"]) == (
            "bailian:qwen-plus",
            "0",
        )
    assert len(upstream(sim, "qwen-plus")) == 7
    states = [f["state"] for e, f in events if e == "breaker" and f["target"] == "bailian:qwen-plus"]
    assert states == ["open", "half_open", "closed"]


def test_failed_probe_reopens_for_longer(sim: SimHandle, gateway: Callable[..., ServerThread]) -> None:
    gw = gateway(
        **fast(
            retry={"attempts": 1},
            breaker={"consecutive_failures": 2, "min_calls": 100, "cooldown_s": 0.5, "max_cooldown_s": 4.0},
        )
    )
    sim.fault(service="generation", model="qwen-plus", status=500)
    chat(gw)
    chat(gw)
    assert len(upstream(sim, "qwen-plus")) == 2
    time.sleep(0.6)
    chat(gw)  # the probe, still failing
    assert len(upstream(sim, "qwen-plus")) == 3
    row = breaker_row(gw, "bailian:qwen-plus")["breaker"]
    assert row["state"] == "open" and row["trips"] == 2 and 0.5 < row["cooldown_remaining_s"] <= 1.0


def test_breaker_opened_by_one_gateway_is_open_in_the_other(
    sim: SimHandle,
    gateway_settings: Callable[..., Any],
    run_gateway: Callable[..., ServerThread],
    redis_url: str,
) -> None:
    one = run_gateway(gateway_settings(**fast(retry={"attempts": 1}), redis_url=redis_url))
    two = run_gateway(gateway_settings(**fast(retry={"attempts": 1}), redis_url=redis_url))
    sim.fault(service="generation", model="qwen-plus", status=500)
    for _ in range(3):
        chat(one)
    assert len(upstream(sim, "qwen-plus")) == 3
    for _ in range(4):
        assert chat(two).headers["x-talkgate-provider"] == "bailian:qwen-turbo"
    assert len(upstream(sim, "qwen-plus")) == 3  # the second gateway never called it
    row = breaker_row(two, "bailian:qwen-plus")
    assert row["breaker"]["state"] == "open"
    assert httpx.get(f"{two.url}/admin/providers").json()["breaker_backend"] == "redis"


def test_redis_down_never_fails_requests(
    sim: SimHandle, gateway: Callable[..., ServerThread], caplog: pytest.LogCaptureFixture
) -> None:
    gw = gateway(**fast(retry={"attempts": 1}), redis_url=f"redis://127.0.0.1:{free_port()}/0")
    sim.fault(service="generation", model="qwen-plus", status=500)
    with caplog.at_level(logging.WARNING, logger="talkgate.circuit"):
        for _ in range(5):
            assert chat(gw).http_response.status_code == 200
    assert len(upstream(sim, "qwen-plus")) == 3  # the in-process breaker still tripped
    assert any("Redis is unreachable" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------- admin view


def test_admin_providers_lists_every_target_per_capability(
    sim: SimHandle, gateway: Callable[..., ServerThread]
) -> None:
    gw = gateway(**fast(retry={"attempts": 1}))
    sim.fault(service="generation", model="qwen-plus", status=500, times=2)
    chat(gw)
    chat(gw)
    body = httpx.get(f"{gw.url}/admin/providers", timeout=10).json()
    assert set(body["capabilities"]) == {"chat", "asr", "tts"}
    assert body["breaker_backend"] == "memory"
    row = next(r for r in body["capabilities"]["chat"] if r["target"] == "bailian:qwen-plus")
    assert row["chain_position"] == 0 and row["configured"] is True
    assert row["breaker"] == {
        "state": "closed",
        "calls": 2,
        "failures": 2,
        "consecutive_failures": 2,
        "trips": 0,
        "cooldown_remaining_s": 0.0,
    }
    assert set(row["health"]) == {"ok", "detail"}
    tts = [r["target"] for r in body["capabilities"]["tts"]]
    assert tts[:2] == ["bailian:cosyvoice-v2", "local:piper-joe"]


def test_admin_providers_requires_the_admin_scope(
    sim: SimHandle, gateway: Callable[..., ServerThread]
) -> None:
    gw = gateway(**{**fast(), "auth": "auto"}, admin_key="admin-secret-key")
    assert httpx.get(f"{gw.url}/admin/providers").status_code == 401
    ok = httpx.get(f"{gw.url}/admin/providers", headers={"authorization": "Bearer admin-secret-key"})
    assert ok.status_code == 200 and "capabilities" in ok.json()


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
