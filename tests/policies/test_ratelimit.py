"""Rate limits: exact GCRA arithmetic in process and in Redis, one global limit across two gateways,
OpenAI headers, token reconciliation and concurrency slots (streams and disconnects included)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from policies.ratelimit import Limits, MemoryRateLimiter, RedisRateLimiter, format_duration
from tests.gateway.saas_support import ADMIN_KEY, CHAT, database_url, saas, saas_redis_url  # noqa: F401
from tests.servers import GatewayProcess


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


async def _admitted(limiter: Any, key: str, limits: Limits, n: int, tokens: int = 0) -> int:
    results = await asyncio.gather(*(limiter.acquire(key, limits, tokens) for _ in range(n)))
    return sum(d.allowed for d in results)


async def test_memory_rpm_is_exact_and_replenishes_one_per_interval() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock=clock)
    limits = Limits(rpm=7)
    assert await _admitted(limiter, "k", limits, 20) == 7
    refused = await limiter.acquire("k", limits)
    assert not refused.allowed and refused.reason == "requests"
    assert refused.retry_after_s == pytest.approx(60 / 7, rel=1e-6)
    h = refused.headers()
    assert h["x-ratelimit-limit-requests"] == "7" and h["x-ratelimit-remaining-requests"] == "0"
    assert h["retry-after"] == "9"
    clock.t += 60 / 7  # exactly one emission interval later: one more
    assert await _admitted(limiter, "k", limits, 3) == 1
    clock.t += 60
    assert await _admitted(limiter, "k", limits, 20) == 7
    assert await _admitted(limiter, "other", limits, 20) == 7  # per key


async def test_memory_tokens_charge_and_reconcile() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock=clock)
    limits = Limits(tpm=1000)
    first = await limiter.acquire("k", limits, tokens=600)
    assert first.allowed and first.tokens is not None and first.tokens.remaining == 400
    assert not (await limiter.acquire("k", limits, tokens=600)).allowed
    await limiter.adjust_tokens("k", limits, -500)  # the request really used 100
    again = await limiter.acquire("k", limits, tokens=600)
    assert again.allowed and again.tokens.remaining == 300
    await limiter.adjust_tokens("k", limits, +300)  # used more than estimated
    assert not (await limiter.acquire("k", limits, tokens=1)).allowed
    # an estimate above the whole budget is clamped, not refused forever
    clock.t += 60
    assert (await limiter.acquire("k", limits, tokens=50_000)).allowed


async def test_memory_concurrency_slots() -> None:
    limiter = MemoryRateLimiter()
    limits = Limits(concurrency=2)
    a, b, c = [await limiter.acquire("k", limits) for _ in range(3)]
    assert a.allowed and b.allowed and not c.allowed and c.reason == "concurrency"
    await limiter.release("k", a.slot)
    assert (await limiter.acquire("k", limits)).allowed


def test_format_duration_matches_openai_style() -> None:
    assert format_duration(0.02) == "20ms"
    assert format_duration(1.5) == "1.5s"
    assert format_duration(360) == "6m0s"


async def test_redis_limit_is_exact_across_two_clients(saas_redis_url: str) -> None:  # noqa: F811
    clients = [aioredis.Redis.from_url(saas_redis_url) for _ in range(2)]
    try:
        a, b = (RedisRateLimiter(c) for c in clients)
        limits = Limits(rpm=10, tpm=100_000, concurrency=None)
        results = await asyncio.gather(*(lim.acquire("k1", limits, 5) for _ in range(15) for lim in (a, b)))
        assert sum(d.allowed for d in results) == 10
        refused = [d for d in results if not d.allowed]
        assert all(d.reason == "requests" and d.retry_after_s > 0 for d in refused)
        remaining = sorted(d.requests.remaining for d in results if d.allowed)
        assert remaining == list(range(10))  # each admission saw the one before it
        # tokens are charged only when every limit passed: 10 admissions x 5 tokens
        tok = await a.acquire("k2", Limits(tpm=100_000), 0)
        assert tok.tokens.remaining == 100_000
        state = await clients[0].get("tg:rl:{k1}:t")
        assert state is not None
    finally:
        for c in clients:
            await c.aclose()


async def test_redis_tokens_reconcile_and_concurrency(saas_redis_url: str) -> None:  # noqa: F811
    client = aioredis.Redis.from_url(saas_redis_url)
    try:
        limiter = RedisRateLimiter(client, lease_s=30)
        limits = Limits(tpm=1000)
        assert (await limiter.acquire("k", limits, 900)).allowed
        assert not (await limiter.acquire("k", limits, 200)).allowed
        await limiter.adjust_tokens("k", limits, -800)
        ok = await limiter.acquire("k", limits, 200)
        assert ok.allowed and 690 <= ok.tokens.remaining <= 700

        conc = Limits(concurrency=3)
        got = [await limiter.acquire("c", conc) for _ in range(4)]
        assert [d.allowed for d in got] == [True, True, True, False]
        await limiter.release("c", got[0].slot)
        assert (await limiter.acquire("c", conc)).allowed
    finally:
        await client.aclose()


async def test_redis_concurrency_lease_frees_slots_of_a_dead_replica(saas_redis_url: str) -> None:  # noqa: F811
    client = aioredis.Redis.from_url(saas_redis_url)
    try:
        limiter = RedisRateLimiter(client, lease_s=0.3)
        conc = Limits(concurrency=1)
        assert (await limiter.acquire("c", conc)).allowed  # never released: the replica "died"
        assert not (await limiter.acquire("c", conc)).allowed
        await asyncio.sleep(0.4)
        assert (await limiter.acquire("c", conc)).allowed
    finally:
        await client.aclose()


def _burst(urls_and_keys: list[tuple[str, str]], n_each: int) -> list[httpx.Response]:
    """Fires n_each requests at each gateway at once, from threads."""
    out: list[httpx.Response] = []
    lock = threading.Lock()

    def worker(url: str, key: str) -> None:
        with httpx.Client(base_url=url, headers={"authorization": f"Bearer {key}"}, timeout=30) as c:
            r = c.post("/v1/chat/completions", json=CHAT)
            with lock:
                out.append(r)

    threads = [threading.Thread(target=worker, args=uk) for uk in urls_and_keys for _ in range(n_each)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_two_gateways_sharing_redis_hold_one_global_limit(
    gateway_process: Callable[..., GatewayProcess],
    saas_redis_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Two ``talkgate serve`` processes sharing one Redis and one key database."""
    env = {
        "TALKGATE_ADMIN_KEY": ADMIN_KEY,
        "TALKGATE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'keys.db'}",
        "TALKGATE_REDIS_URL": saas_redis_url,
    }
    a = gateway_process(**env)
    b = gateway_process(**env, TALKGATE_SAAS__MIGRATE_ON_START="false")
    created = httpx.post(
        f"{a.url}/admin/keys",
        json={"tenant": "acme", "scopes": ["chat"], "rpm": 8},
        headers={"authorization": f"Bearer {ADMIN_KEY}"},
        timeout=30,
    )
    assert created.status_code == 201, created.text
    key = created.json()["key"]
    responses = _burst([(a.url, key), (b.url, key)], 12)
    ok = [r for r in responses if r.status_code == 200]
    limited = [r for r in responses if r.status_code == 429]
    assert len(ok) == 8 and len(limited) == 16, [r.status_code for r in responses]
    for r in limited:
        err = r.json()["error"]
        assert err["code"] == "rate_limit_exceeded" and "8 requests per minute" in err["message"]
        assert int(r.headers["retry-after"]) >= 1
        assert r.headers["x-ratelimit-limit-requests"] == "8"
        assert r.headers["x-ratelimit-remaining-requests"] == "0"
    assert sorted(int(r.headers["x-ratelimit-remaining-requests"]) for r in ok) == list(range(8))
    assert all(r.headers["x-ratelimit-reset-requests"] for r in ok)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_tokens_per_minute_limit_is_reconciled_with_real_usage(saas: Any, saas_redis_url: str) -> None:  # noqa: F811
    gw = saas(redis_url=saas_redis_url)
    key = gw.create_key(scopes=["chat"], tpm=2000)["key"]
    c = gw.client(key)
    body = {**CHAT, "max_tokens": 1500}  # charged ~1500 up front, refunded to the real count after
    first = c.post("/v1/chat/completions", json=body)
    assert first.status_code == 200
    assert int(first.headers["x-ratelimit-remaining-tokens"]) < 500
    used = first.json()["usage"]["total_tokens"]
    deadline = time.monotonic() + 5
    while True:  # the refund happens right after the response is sent
        second = c.post("/v1/chat/completions", json=body)
        if second.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert second.status_code == 200, second.text
    remaining = int(second.headers["x-ratelimit-remaining-tokens"])
    assert remaining <= 2000 - used - 1500 + 5  # first request kept only its real tokens


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_concurrency_slot_is_held_by_a_stream_and_freed_on_disconnect(saas: Any, sim: Any) -> None:  # noqa: F811
    gw = saas()
    key = gw.create_key(scopes=["chat"], concurrency=1)["key"]
    long_answer = " ".join(f"word{i}" for i in range(100))  # ~3 s at 30 ms a token
    config = {"token_delay_ms": 30, "answers": {"tell me a long story": long_answer}}
    sim.control("PUT", "/sim/config", json=config).raise_for_status()
    try:
        story = [{"role": "user", "content": "tell me a long story"}]
        stream_body = {"model": "qwen-plus", "messages": story, "stream": True, "max_tokens": 200}
        with gw.client(key) as c:
            with c.stream("POST", "/v1/chat/completions", json=stream_body) as s:
                assert s.status_code == 200
                lines = s.iter_lines()  # keep the iterator: dropping it closes the connection
                assert next(lines).startswith("data: ")  # the stream is running and holds the only slot
                busy = gw.client(key).post("/v1/chat/completions", json=CHAT)
                assert busy.status_code == 429 and "1 concurrent requests" in busy.json()["error"]["message"]
                rest = list(lines)  # read to the end: the slot is released after the last byte
                assert rest[-2:] == ["data: [DONE]", ""] or rest[-1] == "data: [DONE]", rest[-3:]
            assert _eventually_ok(gw, key)
            # Now disconnect in the middle of a stream: the slot must come back too.
            with c.stream("POST", "/v1/chat/completions", json=stream_body) as s:
                lines = s.iter_lines()
                next(lines)
                assert gw.client(key).post("/v1/chat/completions", json=CHAT).status_code == 429
                disconnected = time.monotonic()
            c.close()
            assert _eventually_ok(gw, key, timeout_s=1.0)  # long before the stream would have ended
            assert time.monotonic() - disconnected < 1.5
    finally:
        sim.control("DELETE", "/sim/config")


def _eventually_ok(gw: Any, key: str, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if gw.client(key).post("/v1/chat/completions", json=CHAT).status_code == 200:
            return True
        time.sleep(0.05)
    return False


async def test_redis_outage_degrades_to_per_process_limits() -> None:
    from policies.ratelimit import FailoverRateLimiter

    dead = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    try:
        limiter = FailoverRateLimiter(RedisRateLimiter(dead))
        limits = Limits(rpm=3, concurrency=5)
        decisions = [await limiter.acquire("k", limits) for _ in range(4)]
        assert [d.allowed for d in decisions] == [True, True, True, False]
        assert decisions[0].slot and decisions[0].slot.startswith("local:")
        await limiter.release("k", decisions[0].slot)
        assert limiter.fallback.in_flight("k") == 2
    finally:
        await dead.aclose()
