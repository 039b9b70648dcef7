"""Circuit breaker state machine, run against both stores: in-process and real Redis."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace

import pytest
import redis.asyncio as aioredis

from policies.circuit import (
    BreakerRegistry,
    BreakerSettings,
    BreakerState,
    CircuitBreaker,
    MemoryBreakerStore,
    Transition,
)
from policies.circuit_redis import RedisBreakerStore
from providers.base import ErrorKind, ProviderError
from tests.servers import free_port

SETTINGS = BreakerSettings(
    window_s=5.0,
    min_calls=4,
    failure_ratio=0.5,
    consecutive_failures=3,
    cooldown_s=0.2,
    max_cooldown_s=0.5,
    cooldown_multiplier=2.0,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Backend:
    name: str
    make: Callable[[BreakerSettings], object]  # another store on the same shared state
    advance: Callable[[float], Awaitable[None]]


@pytest.fixture(params=["memory", "redis"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    if request.param == "memory":
        clock = FakeClock()
        stores: dict[BreakerSettings, MemoryBreakerStore] = {}

        async def advance(seconds: float) -> None:
            clock.now += seconds

        def make(settings: BreakerSettings) -> MemoryBreakerStore:
            return stores.setdefault(settings, MemoryBreakerStore(settings, clock))

        yield Backend("memory", make, advance)
        return
    url = request.getfixturevalue("redis_url")
    clients: list[aioredis.Redis] = []

    def make_redis(settings: BreakerSettings) -> RedisBreakerStore:
        client = aioredis.Redis.from_url(url)
        clients.append(client)
        return RedisBreakerStore(client, settings)

    async def sleep(seconds: float) -> None:
        await asyncio.sleep(seconds + 0.02)

    yield Backend("redis", make_redis, sleep)
    for c in clients:
        await c.aclose()


def breaker(backend: Backend, settings: BreakerSettings = SETTINGS, target: str = "bailian:qwen-plus"):
    changes: list[Transition] = []
    b = CircuitBreaker(target, backend.make(settings), lambda _t, tr: changes.append(tr))  # type: ignore[arg-type]
    return b, changes


async def fail(b: CircuitBreaker, n: int = 1, kind: ErrorKind = ErrorKind.RETRYABLE) -> None:
    for _ in range(n):
        permit = await b.acquire(1.0)
        assert permit.allowed
        await b.record_error(permit, ProviderError(kind, "boom"))


async def succeed(b: CircuitBreaker, n: int = 1) -> None:
    for _ in range(n):
        permit = await b.acquire(1.0)
        assert permit.allowed
        await b.record(permit, True)


async def test_opens_after_consecutive_failures(backend: Backend) -> None:
    b, changes = breaker(backend)
    await fail(b, 2)
    assert (await b.acquire(1.0)).allowed
    await fail(b, 1)
    permit = await b.acquire(1.0)
    assert not permit.allowed
    assert permit.state is BreakerState.OPEN
    assert 0 < permit.retry_in_s <= SETTINGS.cooldown_s + 1e-6
    assert [(c.old, c.new) for c in changes] == [(BreakerState.CLOSED, BreakerState.OPEN)]
    snap = await b.snapshot()
    assert snap.state is BreakerState.OPEN and snap.trips == 1 and snap.cooldown_remaining_s > 0


async def test_opens_on_failure_ratio_with_enough_calls(backend: Backend) -> None:
    settings = replace(SETTINGS, consecutive_failures=100, min_calls=6)
    b, _ = breaker(backend, settings)
    for _ in range(2):  # 2 failures / 4 calls: ratio reached but below min_calls
        await succeed(b)
        await fail(b)
    assert (await b.snapshot()).state is BreakerState.CLOSED
    await succeed(b)  # 2/5
    await fail(b)  # 3/6 = 0.5 with 6 calls: trips
    assert (await b.snapshot()).state is BreakerState.OPEN


async def test_a_success_resets_the_consecutive_count(backend: Backend) -> None:
    settings = replace(SETTINGS, min_calls=100)
    b, _ = breaker(backend, settings)
    for _ in range(4):
        await fail(b, 2)
        await succeed(b)
    snap = await b.snapshot()
    assert snap.state is BreakerState.CLOSED
    assert snap.calls == 12 and snap.failures == 8 and snap.consecutive_failures == 0


async def test_rejected_requests_do_not_count(backend: Backend) -> None:
    b, _ = breaker(backend)
    await fail(b, 5, ErrorKind.BAD_REQUEST)
    await fail(b, 5, ErrorKind.CONTENT_FILTERED)
    snap = await b.snapshot()
    assert snap.state is BreakerState.CLOSED and snap.failures == 0


async def test_half_open_lets_exactly_one_probe_through(backend: Backend) -> None:
    b, changes = breaker(backend)
    await fail(b, 3)
    await backend.advance(SETTINGS.cooldown_s)
    permits = await asyncio.gather(*(b.acquire(5.0) for _ in range(20)))
    allowed = [p for p in permits if p.allowed]
    assert len(allowed) == 1 and allowed[0].probe
    assert all(p.state is BreakerState.HALF_OPEN for p in permits)
    assert changes[-1].new is BreakerState.HALF_OPEN
    await b.record(allowed[0], True)
    assert changes[-1].new is BreakerState.CLOSED
    snap = await b.snapshot()
    assert snap.state is BreakerState.CLOSED and snap.trips == 0
    assert all([(await b.acquire(1.0)).allowed for _ in range(3)])


async def test_failed_probe_reopens_with_a_longer_cooldown_up_to_the_max(backend: Backend) -> None:
    settings = replace(SETTINGS, cooldown_s=0.2, cooldown_multiplier=4.0, max_cooldown_s=1.0)
    b, changes = breaker(backend, settings)
    await fail(b, 3)
    cooldowns = []
    for _ in range(3):
        await backend.advance((await b.snapshot()).cooldown_remaining_s)
        probe = await b.acquire(1.0)
        assert probe.allowed and probe.probe
        await b.record_error(probe, ProviderError(ErrorKind.TIMEOUT, "still down"))
        assert changes[-1].old is BreakerState.HALF_OPEN and changes[-1].new is BreakerState.OPEN
        snap = await b.snapshot()
        cooldowns.append(snap.cooldown_remaining_s)
    assert snap.trips == 4
    # 0.2 s first, then 0.8 s, then capped at 1.0 s.
    assert 0.2 < cooldowns[0] <= 0.8 + 1e-6
    assert 0.8 < cooldowns[1] <= 1.0 + 1e-6 and 0.8 < cooldowns[2] <= 1.0 + 1e-6


async def test_success_after_trips_resets_the_cooldown_growth(backend: Backend) -> None:
    b, _ = breaker(backend)
    await fail(b, 3)
    await backend.advance(SETTINGS.cooldown_s)
    await fail(b, 1)  # the probe fails: cooldown doubles
    await backend.advance(2 * SETTINGS.cooldown_s)
    await succeed(b, 1)  # the probe succeeds: closed, growth reset
    await fail(b, 3)
    snap = await b.snapshot()
    assert snap.trips == 1 and snap.cooldown_remaining_s <= SETTINGS.cooldown_s + 1e-6


async def test_a_lapsed_probe_lease_lets_another_probe_through(backend: Backend) -> None:
    b, _ = breaker(backend)
    await fail(b, 3)
    await backend.advance(SETTINGS.cooldown_s)
    first = await b.acquire(0.1)  # this probe never reports (its caller died)
    assert first.probe
    assert not (await b.acquire(0.1)).allowed
    await backend.advance(0.1)
    second = await b.acquire(0.1)
    assert second.allowed and second.probe


async def test_outcomes_of_calls_started_before_the_trip_do_not_decide(backend: Backend) -> None:
    b, _ = breaker(backend)
    early = await b.acquire(1.0)  # in flight while the breaker trips
    await fail(b, 3)
    await b.record(early, True)
    assert (await b.snapshot()).state is BreakerState.OPEN
    await backend.advance(SETTINGS.cooldown_s)
    probe = await b.acquire(1.0)
    await b.record(early, True)  # still not the probe
    assert (await b.snapshot()).state is BreakerState.HALF_OPEN
    await b.record(probe, True)
    assert (await b.snapshot()).state is BreakerState.CLOSED


async def test_targets_are_independent(backend: Backend) -> None:
    store = backend.make(SETTINGS)
    registry = BreakerRegistry(store)  # type: ignore[arg-type]
    await fail(registry.get("bailian:qwen-plus"), 3)
    assert not (await registry.get("bailian:qwen-plus").acquire(1.0)).allowed
    assert (await registry.get("bailian:qwen-turbo").acquire(1.0)).allowed
    assert registry.get("bailian:qwen-plus") is registry.get("bailian:qwen-plus")


def test_state_changes_are_logged_as_warnings(caplog: pytest.LogCaptureFixture) -> None:
    store = MemoryBreakerStore(SETTINGS, FakeClock())
    events: list[tuple[str, str]] = []
    registry = BreakerRegistry(store, lambda t, tr: events.append((t, tr.new.value)))
    with caplog.at_level(logging.WARNING, logger="talkgate.circuit"):
        asyncio.run(fail(registry.get("bailian:qwen-plus"), 3))
    assert events == [("bailian:qwen-plus", "open")]
    assert any("bailian:qwen-plus" in r.getMessage() and "open" in r.getMessage() for r in caplog.records)


async def test_window_forgets_old_failures() -> None:
    clock = FakeClock()
    settings = replace(SETTINGS, consecutive_failures=100, min_calls=4)
    b = CircuitBreaker("t", MemoryBreakerStore(settings, clock))
    await fail(b, 3)
    clock.now += settings.window_s + 1
    await succeed(b, 3)
    await fail(b)  # 1/4 in the window: old failures are gone
    snap = await b.snapshot()
    assert snap.state is BreakerState.CLOSED and snap.calls == 4 and snap.failures == 1


# --------------------------------------------------------------------------- shared through Redis


async def test_two_processes_share_one_breaker_through_redis(redis_url: str) -> None:
    one = aioredis.Redis.from_url(redis_url)
    two = aioredis.Redis.from_url(redis_url)
    try:
        a = CircuitBreaker("bailian:qwen-plus", RedisBreakerStore(one, SETTINGS))
        b = CircuitBreaker("bailian:qwen-plus", RedisBreakerStore(two, SETTINGS))
        await fail(a, 3)
        assert not (await b.acquire(1.0)).allowed
        await asyncio.sleep(SETTINGS.cooldown_s + 0.02)
        permits = await asyncio.gather(*(x.acquire(5.0) for x in (a, b) * 10))
        assert sum(p.allowed for p in permits) == 1
        probe = next(p for p in permits if p.allowed)
        await (a if permits.index(probe) % 2 == 0 else b).record(probe, True)
        assert (await b.acquire(1.0)).allowed and (await a.acquire(1.0)).allowed
    finally:
        await one.aclose()
        await two.aclose()


async def test_redis_down_falls_back_to_in_process_state(caplog: pytest.LogCaptureFixture) -> None:
    # Default client options, as services builds it: redis-py would retry with backoff for
    # seconds; the store bounds each operation itself.
    dead = aioredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0")
    store = RedisBreakerStore(dead, SETTINGS)
    b = CircuitBreaker("bailian:qwen-plus", store)
    with caplog.at_level(logging.WARNING, logger="talkgate.circuit"):
        assert (await b.acquire(1.0)).allowed  # Redis refused: served from memory, no exception
        await fail(b, 3)
        assert not (await b.acquire(1.0)).allowed
    assert store.degraded
    assert (await b.snapshot()).backend.startswith("memory")
    warnings = [r for r in caplog.records if "Redis is unreachable" in r.getMessage()]
    assert len(warnings) == 1  # logged once, not per request
    await dead.aclose()
