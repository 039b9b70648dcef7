"""Circuit breakers end to end, and the admin view of them: the real gateway and simulator, the
breaker state shared through Redis between two gateways, and requests that never fail when Redis is
down. Split from test_resilience.py (retries and failover)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import SimHandle
from tests.gateway import resilience_support
from tests.gateway.resilience_support import (
    ADMIN,
    chat,
    events_of,
    fast,
    upstream,
)
from tests.servers import GatewayProcess, ServerThread, free_port

# shared fixture: a factory of real gateways with the given settings
gateway = resilience_support.gateway

# --------------------------------------------------------------------------- circuit breaker


def breaker_row(gw: ServerThread, target: str, capability: str = "chat") -> dict[str, Any]:
    body = httpx.get(f"{gw.url}/admin/providers", headers=ADMIN, timeout=10).json()
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
    gateway_process: Callable[..., GatewayProcess],
    redis_url: str,
    tmp_path: Path,
) -> None:
    """Two ``talkgate serve`` processes: the only thing they share is Redis (and the upstream)."""
    config = tmp_path / "fast.yaml"
    config.write_text(yaml.safe_dump(fast(retry={"attempts": 1})), encoding="utf-8")
    env = {
        "TALKGATE_CONFIG": str(config),
        "TALKGATE_REDIS_URL": redis_url,
        "TALKGATE_ADMIN_KEY": "adm-two-processes-0123",
    }
    one = gateway_process(**env)
    two = gateway_process(**env)
    assert one.process and two.process and one.process.pid != two.process.pid
    sim.fault(service="generation", model="qwen-plus", status=500)
    for _ in range(3):
        chat(one)
    assert len(upstream(sim, "qwen-plus")) == 3
    for _ in range(4):
        assert chat(two).headers["x-talkgate-provider"] == "bailian:qwen-turbo"
    assert len(upstream(sim, "qwen-plus")) == 3  # the second gateway never called it
    admin = {"authorization": "Bearer adm-two-processes-0123"}
    body = httpx.get(f"{two.url}/admin/providers", headers=admin, timeout=10).json()
    assert body["breaker_backend"] == "redis"
    row = next(r for r in body["capabilities"]["chat"] if r["target"] == "bailian:qwen-plus")
    assert row["breaker"]["state"] == "open"


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
    body = httpx.get(f"{gw.url}/admin/providers", headers=ADMIN, timeout=10).json()
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
    gw = gateway(**{**fast(), "auth": "auto", "admin_key": "admin-secret-key"})
    assert httpx.get(f"{gw.url}/admin/providers").status_code == 401
    ok = httpx.get(f"{gw.url}/admin/providers", headers={"authorization": "Bearer admin-secret-key"})
    assert ok.status_code == 200 and "capabilities" in ok.json()
