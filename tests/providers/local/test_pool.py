"""The local model pool: slot and per-model limits, back-pressure, release from any thread, shutdown."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from providers.base import ProviderError
from providers.local.pool import Limit, ModelPool
from providers.local.workers.ipc import LoadSpec
from tests.providers.local.workers.support import ENGINE, Config, wait_gone


@pytest.fixture
def pool() -> Iterator[ModelPool]:
    p = ModelPool(2)
    yield p
    p.shutdown()


class Running:
    """How many holders of a slot run at once."""

    def __init__(self) -> None:
        self.now = self.peak = 0

    async def hold(self, pool: ModelPool, limits: tuple[Limit, ...], seconds: float) -> None:
        release = await pool.acquire(limits)
        self.now += 1
        self.peak = max(self.peak, self.now)
        await asyncio.sleep(seconds)
        self.now -= 1
        release()


async def test_model_limit_is_honoured(pool: ModelPool) -> None:
    running = Running()
    limit = Limit(1, "m")
    await asyncio.gather(*(running.hold(pool, (limit,), 0.02) for _ in range(5)))
    assert running.peak == 1


async def test_pool_size_bounds_all_models(pool: ModelPool) -> None:
    running = Running()
    a, b, c = Limit(2, "a"), Limit(2, "b"), Limit(2, "c")
    await asyncio.gather(*(running.hold(pool, (lim,), 0.02) for lim in (a, b, c, a, b, c)))
    assert running.peak == 2  # the pool's two slots, though the models would allow six


async def test_a_waiting_caller_holds_no_pool_slot(pool: ModelPool) -> None:
    busy = Limit(1, "busy")
    first = await pool.acquire((busy,))
    waiting = asyncio.create_task(pool.acquire((busy,)))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    other = await asyncio.wait_for(pool.acquire((Limit(1, "other"),)), 1)  # a slot is still free
    other()
    first()
    (await waiting)()


async def test_release_is_idempotent_and_works_from_another_thread(pool: ModelPool) -> None:
    limit = Limit(1, "m")
    release = await pool.acquire((limit,))
    thread = threading.Thread(target=lambda: (release(), release()))
    thread.start()
    await asyncio.to_thread(thread.join)
    again = await asyncio.wait_for(pool.acquire((limit,)), 1)
    again()
    assert limit.semaphore()._value == 1  # released once, not twice


async def test_cancelled_waiter_takes_nothing(pool: ModelPool) -> None:
    limit = Limit(1, "m")
    holder = await pool.acquire((limit,))
    waiter = asyncio.create_task(pool.acquire((limit,)))
    await asyncio.sleep(0.05)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    holder()
    (await asyncio.wait_for(pool.acquire((limit,)), 1))()


async def test_shutdown_stops_every_worker_and_refuses_new_ones() -> None:
    pool = ModelPool(2)
    workers = [
        pool.supervisor(LoadSpec(ENGINE, f"m{i}", Config(), None), engine="echo", label=f"m{i}")
        for i in range(2)
    ]
    pids = [await w.call("pid") for w in workers]
    assert sorted(pool.worker_pids()) == sorted(pids)
    assert {(s.model, s.up) for s in pool.stats()} == {("m0", 1), ("m1", 1)}
    await asyncio.to_thread(pool.shutdown)
    assert all(wait_gone(pid, 5) for pid in pids)
    with pytest.raises(ProviderError, match="shut down"):
        pool.supervisor(LoadSpec(ENGINE, "late", Config(), None), engine="echo", label="late")


def test_limit_rejects_zero() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Limit(0, "m")
