"""Bounds on local model calls, and the registry of the worker processes that run them.

Local models are CPU-bound, so two limits give back-pressure *in the event loop* (callers
wait on a semaphore instead of piling work onto the workers):

- the pool slot limit (``local.workers``): at most that many model calls run at once,
  across every local model;
- a per-model limit (``concurrency`` in the model's config).

A slot is released when the *worker* has finished the call, not when the awaiting coroutine
goes away: a cancelled caller cannot free a model that is still computing.

The pool also owns every worker supervisor its providers create (hot swaps make new provider
instances over the same pool), so ``shutdown`` stops them all and the counters of restarts and
crashes per (engine, model) survive a swap.

Semaphores are created per event loop (asyncio primitives are bound to one loop); the
gateway runs a single loop, so the limits are global in practice.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from collections.abc import Callable

from providers.local.models import unavailable
from providers.local.workers.ipc import LoadSpec
from providers.local.workers.supervisor import RestartPolicy, WorkerStats, WorkerSupervisor


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
    """The slot limit and the worker registry; see the module docstring."""

    def __init__(self, workers: int, *, policy: RestartPolicy | None = None) -> None:
        self.workers = max(1, workers)
        self.policy = policy or RestartPolicy()
        self._slots = Limit(self.workers, "pool")
        self._supervisors: set[WorkerSupervisor] = set()
        self._stats: dict[tuple[str, str], WorkerStats] = {}
        self._lock = threading.Lock()
        self._closed = False

    async def acquire(self, limits: tuple[Limit, ...] = ()) -> Callable[[], None]:
        """Acquire the model limits, then a pool slot; returns an idempotent, thread-safe release."""
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

    # ------------------------------------------------------------------ workers

    def supervisor(self, spec: LoadSpec, *, engine: str, label: str) -> WorkerSupervisor:
        """A new supervisor for one model's worker, registered for shutdown and metrics."""
        with self._lock:
            if self._closed:
                raise unavailable("the local model pool is shut down")
            stats = self._stats.setdefault((engine, spec.name), WorkerStats(engine, spec.name))
            worker = WorkerSupervisor(spec, label=label, policy=self.policy, stats=stats)
            self._supervisors.add(worker)
            return worker

    def forget(self, worker: WorkerSupervisor) -> None:
        with self._lock:
            self._supervisors.discard(worker)

    def stats(self) -> list[WorkerStats]:
        """Per (engine, model) counters; ``unhealthy`` is refreshed from the live supervisors."""
        with self._lock:
            supervisors = list(self._supervisors)
            stats = list(self._stats.values())
        for worker in supervisors:
            worker.health()
        return stats

    def worker_pids(self) -> list[int]:
        with self._lock:
            supervisors = list(self._supervisors)
        return [p.pid for w in supervisors if (p := w.process) is not None and p.pid is not None]

    def shutdown(self) -> None:
        """Stop every worker (blocking: graceful, then SIGKILL); no new ones start."""
        with self._lock:
            self._closed = True
            supervisors, self._supervisors = list(self._supervisors), set()
        for worker in supervisors:
            worker.stop()


def _on_loop_thread(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
