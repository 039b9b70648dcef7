"""A bounded worker pool for blocking model calls, with per-model concurrency limits.

Local models are CPU-bound and their Python bindings block, so every call runs on a
shared, fixed-size thread pool. Two limits give back-pressure *in the event loop*
(callers wait on a semaphore instead of piling work into the executor's queue):

- the pool slot limit (``workers``): at most that many model calls run at once;
- a per-model limit (``concurrency`` in the model's config).

A slot is released when the *thread* finishes, not when the awaiting coroutine goes
away: a cancelled caller cannot free a model that a worker thread is still using.

Semaphores are created per event loop (asyncio primitives are bound to one loop); the
gateway runs a single loop, so the limits are global in practice.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from providers.base import ErrorKind, ProviderError

T = TypeVar("T")

_DONE = object()


class Limit:
    """A concurrency limit usable from any event loop (one asyncio.Semaphore per loop)."""

    def __init__(self, capacity: int, name: str = "") -> None:
        if capacity < 1:
            raise ValueError(f"concurrency limit {name!r} must be at least 1, got {capacity}")
        self.capacity = capacity
        self.name = name
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )
        self._guard = threading.Lock()

    def semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        with self._guard:
            sem = self._by_loop.get(loop)
            if sem is None:
                sem = self._by_loop[loop] = asyncio.Semaphore(self.capacity)
            return sem


class ModelPool:
    """The shared executor plus the slot limit; see the module docstring."""

    def __init__(self, workers: int, *, name: str = "talkgate-local") -> None:
        self.workers = max(1, workers)
        self._slots = Limit(self.workers, "pool")
        self._executor: ThreadPoolExecutor | None = None
        self._name = name
        self._lock = threading.Lock()

    def _get_executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix=self._name)
            return self._executor

    async def _acquire(self, limits: tuple[Limit, ...]) -> Callable[[], None]:
        """Acquire the model limits, then a pool slot; returns a thread-safe release function."""
        loop = asyncio.get_running_loop()
        acquired: list[asyncio.Semaphore] = []
        try:
            # Model limits first: a caller waiting for a busy model must not hold a pool slot.
            for limit in (*limits, self._slots):
                sem = limit.semaphore()
                await sem.acquire()
                acquired.append(sem)
        except BaseException:
            for sem in reversed(acquired):
                sem.release()
            raise

        released = threading.Event()

        def release() -> None:
            if released.is_set():
                return
            released.set()

            def _do() -> None:
                for sem in reversed(acquired):
                    sem.release()

            if _on_loop_thread(loop):
                _do()
            else:
                with contextlib.suppress(RuntimeError):  # loop closed: nothing left to wake
                    loop.call_soon_threadsafe(_do)

        return release

    async def run(self, fn: Callable[..., T], *args: Any, limits: tuple[Limit, ...] = ()) -> T:
        """Run ``fn(*args)`` on a worker thread once the limits allow; await its result."""
        release = await self._acquire(limits)
        try:
            future = self._get_executor().submit(fn, *args)
        except BaseException:
            release()
            raise
        future.add_done_callback(lambda _f: release())
        return await asyncio.wrap_future(future)

    async def iterate(
        self,
        make_iter: Callable[[], Iterator[T]],
        *,
        limits: tuple[Limit, ...] = (),
        buffer: int = 8,
    ) -> AsyncIterator[T]:
        """Drive a blocking iterator on a worker thread and yield its items here.

        The producer may run at most ``buffer`` items ahead of the consumer (back-pressure).
        When the consumer stops early (break, cancellation, error), the producer stops at
        its next item and the iterator is closed on its own thread; the slots are released
        only after that.
        """
        loop = asyncio.get_running_loop()
        release = await self._acquire(limits)
        queue: asyncio.Queue[Any] = asyncio.Queue()
        space = threading.Semaphore(buffer)
        stop = threading.Event()

        def deliver(item: Any) -> None:
            with contextlib.suppress(RuntimeError):  # loop closed
                loop.call_soon_threadsafe(queue.put_nowait, item)

        def produce() -> None:
            try:
                iterator = make_iter()
                try:
                    for item in iterator:
                        while not space.acquire(timeout=0.05):
                            if stop.is_set():
                                return
                        if stop.is_set():
                            return
                        deliver(item)
                finally:
                    close = getattr(iterator, "close", None)
                    if close is not None:
                        close()
            except BaseException as exc:  # surfaced to the consumer
                deliver(_Failure(exc))
            else:
                deliver(_DONE)

        try:
            future: Future[None] = self._get_executor().submit(produce)
        except BaseException:
            release()
            raise

        def on_done(f: Future[None]) -> None:
            if f.cancelled():  # the pool shut down before the producer started
                deliver(_Failure(ProviderError(ErrorKind.UNAVAILABLE, "the local model pool is shut down")))
            release()

        future.add_done_callback(on_done)
        try:
            while True:
                item = await queue.get()
                if item is _DONE:
                    return
                if isinstance(item, _Failure):
                    raise item.exc
                space.release()
                yield item
        finally:
            stop.set()

    def shutdown(self) -> None:
        """Stop accepting work; running calls finish on their threads."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)


class _Failure:
    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def _on_loop_thread(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
