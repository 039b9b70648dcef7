"""The bounded model pool: limits, back-pressure, cancellation, streaming from a worker thread."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from providers.base import ErrorKind, ProviderError
from providers.local.pool import Limit, ModelPool


class Gauge:
    """Counts calls running at once on worker threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0
        self.started = 0

    def slow(self, seconds: float) -> str:
        with self.lock:
            self.now += 1
            self.started += 1
            self.peak = max(self.peak, self.now)
        time.sleep(seconds)
        with self.lock:
            self.now -= 1
        return threading.current_thread().name


@pytest.fixture
def pool() -> Iterator[ModelPool]:
    p = ModelPool(4)
    yield p
    p.shutdown()


async def test_run_returns_result_from_a_worker_thread(pool: ModelPool) -> None:
    name = await pool.run(Gauge().slow, 0.0)
    assert name.startswith("talkgate-local")
    assert name != threading.current_thread().name


async def test_model_limit_is_honoured(pool: ModelPool) -> None:
    gauge, limit = Gauge(), Limit(2, "m")
    await asyncio.gather(*(pool.run(gauge.slow, 0.05, limits=(limit,)) for _ in range(6)))
    assert gauge.started == 6
    assert gauge.peak == 2


async def test_pool_size_bounds_all_models() -> None:
    pool, gauge = ModelPool(1), Gauge()
    try:
        a, b = Limit(3, "a"), Limit(3, "b")
        await asyncio.gather(*(pool.run(gauge.slow, 0.03, limits=(lim,)) for lim in (a, b, a, b)))
    finally:
        pool.shutdown()
    assert gauge.peak == 1


def _blocker(gate: threading.Event, started: list[str]) -> Callable[[str], str]:
    """A model call that notes it began, then holds its worker thread until ``gate`` opens."""

    def blocked(tag: str) -> str:
        started.append(tag)
        gate.wait(5)
        return tag

    return blocked


async def test_callers_wait_instead_of_queueing(pool: ModelPool) -> None:
    limit, gate, started = Limit(1, "m"), threading.Event(), []
    blocked = _blocker(gate, started)
    first = asyncio.create_task(pool.run(blocked, "first", limits=(limit,)))
    second = asyncio.create_task(pool.run(blocked, "second", limits=(limit,)))
    await asyncio.sleep(0.1)
    assert started == ["first"]  # the second caller is parked on the semaphore, not in the executor
    gate.set()
    assert await asyncio.gather(first, second) == ["first", "second"]


async def test_cancelled_caller_keeps_the_slot_until_its_thread_ends(pool: ModelPool) -> None:
    limit, gate, started = Limit(1, "m"), threading.Event(), []
    blocked = _blocker(gate, started)
    first = asyncio.create_task(pool.run(blocked, "first", limits=(limit,)))
    await asyncio.sleep(0.05)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    second = asyncio.create_task(pool.run(blocked, "second", limits=(limit,)))
    await asyncio.sleep(0.1)
    assert started == ["first"]  # the model is still busy on the worker
    gate.set()
    assert await second == "second"


async def test_iterate_yields_in_order_and_propagates_errors(pool: ModelPool) -> None:
    def numbers() -> Iterator[int]:
        yield from range(5)
        raise ProviderError(ErrorKind.RETRYABLE, "boom")

    seen: list[int] = []
    with pytest.raises(ProviderError, match="boom"):
        async for n in pool.iterate(numbers):
            seen.append(n)
    assert seen == [0, 1, 2, 3, 4]


async def test_iterate_applies_back_pressure(pool: ModelPool) -> None:
    produced = 0

    def endless() -> Iterator[int]:
        nonlocal produced
        while True:
            produced += 1
            yield produced

    stream = pool.iterate(endless, buffer=3)
    assert await anext(stream) == 1
    await asyncio.sleep(0.2)
    # 3 buffered + 1 handed out + at most 1 computed and waiting for space
    assert produced <= 5
    await stream.aclose()


async def test_stopping_the_consumer_stops_and_closes_the_producer(pool: ModelPool) -> None:
    limit, closed = Limit(1, "m"), threading.Event()

    def endless() -> Iterator[int]:
        try:
            n = 0
            while True:
                n += 1
                time.sleep(0.01)
                yield n
        finally:
            closed.set()

    async def consume() -> None:
        async for n in pool.iterate(endless, limits=(limit,)):
            if n == 3:
                break

    await consume()
    assert await asyncio.to_thread(closed.wait, 2)
    # the slot came back: another call on the same model runs
    assert await asyncio.wait_for(pool.run(lambda: "again", limits=(limit,)), 2) == "again"


async def test_cancelling_a_stream_consumer_stops_the_producer(pool: ModelPool) -> None:
    closed = threading.Event()

    def endless() -> Iterator[int]:
        try:
            while True:
                time.sleep(0.01)
                yield 1
        finally:
            closed.set()

    async def consume() -> None:
        async for _ in pool.iterate(endless):
            pass

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.to_thread(closed.wait, 2)


def test_limit_rejects_zero() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Limit(0, "m")
