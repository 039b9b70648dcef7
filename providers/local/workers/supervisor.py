"""Keeps one local model's worker process running: start on demand, restart with back-off.

A worker that dies unexpectedly (segfault, abort, OOM kill, a hung call killed after its
cancel grace) has already failed the calls it was running (``EngineProcess``); here the crash
is counted and a fresh worker is started: at once after a first crash, then after a back-off
that doubles up to ``backoff_max_s``. A model that crashed ``max_crashes`` times within
``crash_window_s`` is unhealthy (``health()``, ``/readyz``, metrics) and is no longer
restarted eagerly, only when a call asks for it after the back-off; until then calls fail
fast with ``unavailable``, which the router treats like any provider failure (next target).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from providers.base import ErrorKind, ProviderError
from providers.local.workers.ipc import LoadSpec
from providers.local.workers.process import EngineProcess

log = logging.getLogger("talkgate.local.worker")


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """``settings.local.supervision`` (pydantic validates this dataclass like a model)."""

    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    crash_window_s: float = 60.0
    max_crashes: int = 3
    #: a cancelled call must stop within this long, or its worker is killed (a hung native call)
    cancel_grace_s: float = 5.0
    load_timeout_s: float = 120.0


@dataclass
class WorkerStats:
    """Counters of one (engine, model) across every worker and provider instance (hot swaps)."""

    engine: str
    model: str
    starts: int = 0
    restarts: int = 0
    crashes: int = 0
    up: int = 0
    unhealthy: bool = False


class WorkerSupervisor:
    """One model's worker; see the module docstring."""

    def __init__(self, spec: LoadSpec, *, label: str, policy: RestartPolicy, stats: WorkerStats) -> None:
        self.spec = spec
        self.label = label
        self.policy = policy
        self.stats = stats
        self._process: EngineProcess | None = None
        self._start_lock = threading.Lock()
        self._crashes: collections.deque[float] = collections.deque()
        self._not_before = 0.0
        self._stopped = False
        self._ever_started = False

    # ------------------------------------------------------------------ state

    @property
    def process(self) -> EngineProcess | None:
        process = self._process
        return process if process is not None and process.alive else None

    @property
    def loaded(self) -> bool:
        return self.process is not None

    def recent_crashes(self) -> int:
        horizon = time.monotonic() - self.policy.crash_window_s
        while self._crashes and self._crashes[0] < horizon:
            self._crashes.popleft()
        return len(self._crashes)

    def health(self) -> tuple[bool, str]:
        crashes = self.recent_crashes()
        self.stats.unhealthy = crashes >= self.policy.max_crashes
        process = self.process
        state = f"loaded (worker pid {process.pid})" if process is not None else "not loaded"
        if crashes:
            state += f"; worker crashed {crashes} times in the last {self.policy.crash_window_s:.0f} s"
        if self.stats.unhealthy:
            wait = max(0.0, self._not_before - time.monotonic())
            return False, f"{state} (unhealthy; next start in {wait:.1f} s)"
        return True, state

    # ------------------------------------------------------------------ start

    async def ensure(self) -> EngineProcess:
        """The running worker, started (and the model loaded) if need be."""
        process = self.process
        if process is not None:
            return process
        return await asyncio.to_thread(self._ensure_sync)

    def start_blocking(self) -> EngineProcess:
        """``ensure`` for a plain thread: the running worker, started if need be (blocking)."""
        return self._ensure_sync()

    def call_blocking(self, method: str, *args: Any) -> Any:
        """A call from a plain thread (the render pool), waiting for its result."""
        return self._ensure_sync().call_blocking(method, *args)

    def _ensure_sync(self) -> EngineProcess:
        with self._start_lock:
            process = self.process
            if process is not None:
                return process
            if self._stopped:
                raise ProviderError(
                    ErrorKind.UNAVAILABLE, f"{self.label} is unloaded", code="ModelUnavailable"
                )
            wait = self._not_before - time.monotonic()
            if wait > 0:
                raise ProviderError(
                    ErrorKind.UNAVAILABLE,
                    f"{self.label}: the worker crashed {self.recent_crashes()} times in the last "
                    f"{self.policy.crash_window_s:.0f} s; next start in {wait:.1f} s",
                    code="WorkerRestarting",
                    retry_after=wait,
                )
            process = EngineProcess(self.spec, label=self.label, cancel_grace_s=self.policy.cancel_grace_s)
            process.on_exit = lambda expected, reason: self._exited(process, expected, reason)
            if self._ever_started:
                self.stats.restarts += 1
            self._ever_started = True
            self.stats.starts += 1
            process.start(self.policy.load_timeout_s)
            self._process = process
            self.stats.up = 1
            log.info("%s: worker pid %s ready", self.label, process.pid)
            return process

    def _exited(self, process: EngineProcess, expected: bool, reason: str) -> None:
        """From the dead worker's reader thread (a fresh worker may already be running)."""
        if self._process is process:
            self.stats.up = 0
        if expected or self._stopped:
            return
        now = time.monotonic()
        self._crashes.append(now)
        self.stats.crashes += 1
        crashes = self.recent_crashes()
        delay = 0.0 if crashes <= 1 else self.policy.backoff_initial_s * 2 ** (crashes - 2)
        delay = min(delay, self.policy.backoff_max_s)
        self._not_before = now + delay
        self.stats.unhealthy = crashes >= self.policy.max_crashes
        if self.stats.unhealthy:
            log.error(
                "%s: %d crashes in %.0f s: marked unhealthy", self.label, crashes, self.policy.crash_window_s
            )
            return
        timer = threading.Timer(delay, self._restart_quietly)
        timer.daemon = True
        timer.start()

    def _restart_quietly(self) -> None:
        try:
            self._ensure_sync()
        except ProviderError as exc:
            log.warning("%s: restart failed: %s", self.label, exc.message)

    # ------------------------------------------------------------------ calls

    async def call(self, method: str, *args: Any, on_end: Callable[[], None] | None = None) -> Any:
        """``on_end`` runs exactly once, when the worker has finished the call (or never got it)."""
        process = await self._ensure_for(on_end)
        return await process.call(method, *args, on_end=on_end)

    async def stream(
        self, method: str, *args: Any, on_end: Callable[[], None] | None = None
    ) -> AsyncIterator[Any]:
        process = await self._ensure_for(on_end)
        async with aclosing(process.stream(method, *args, on_end=on_end)) as items:
            async for item in items:
                yield item

    async def _ensure_for(self, on_end: Callable[[], None] | None) -> EngineProcess:
        try:
            return await self.ensure()
        except BaseException:
            if on_end is not None:
                on_end()
            raise

    async def drain(self, timeout_s: float) -> bool:
        """Wait until the worker runs no call (at most ``timeout_s``); whether it got there."""
        deadline = time.monotonic() + timeout_s
        while (process := self.process) is not None and process.busy:
            if time.monotonic() >= deadline:
                log.warning("%s: %d calls still running after %.0f s", self.label, process.busy, timeout_s)
                return False
            await asyncio.sleep(0.05)
        return True

    def stop(self) -> None:
        """Stop the worker for good (blocking; graceful, then SIGKILL)."""
        self._stopped = True
        with self._start_lock:
            process, self._process = self._process, None
        if process is not None:
            process.stop()
        self.stats.up = 0
