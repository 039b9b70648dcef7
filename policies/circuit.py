"""Circuit breakers per ``provider:model`` target, with a real half-open probe.

Why: when Bailian has a bad minute, every request that still goes upstream pays a timeout
before falling back. A breaker that trips on the first few failures lets the rest skip the
target at no cost. Unlike gateways that merely let a cooldown expire, the half-open state
here lets EXACTLY ONE probe through (across every replica when Redis is shared); only its
success sends traffic back, and its failure re-opens for a longer cooldown.

States: closed → open when, inside a sliding window, the failure ratio reaches the
threshold with at least ``min_calls`` calls, or after ``consecutive_failures`` failures in a
row. open → half-open once the cooldown has passed (the first caller after that becomes
the probe). half-open → closed on the probe's success (cooldown growth reset), → open on
its failure (cooldown × multiplier, up to the maximum).

This module holds the state machine for one process (``MemoryBreakerStore``), the
``CircuitBreaker`` facade and the ``BreakerRegistry``. The Redis store, whose Lua scripts
run the same machine atomically for all replicas, is in ``policies/circuit_redis.py``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from providers.base import BREAKER_KINDS, ProviderError

log = logging.getLogger("talkgate.circuit")

#: Number of buckets the sliding window is cut into (its resolution is window_s / WINDOW_SLOTS).
WINDOW_SLOTS = 10


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    window_s: float = 30.0
    min_calls: int = 10
    failure_ratio: float = 0.5
    consecutive_failures: int = 5
    cooldown_s: float = 5.0
    max_cooldown_s: float = 120.0
    cooldown_multiplier: float = 2.0

    @classmethod
    def from_config(cls, config: Any) -> BreakerSettings:
        return cls(
            **{name: getattr(config, name) for name in cls.__dataclass_fields__ if hasattr(config, name)}
        )

    def cooldown_for(self, trips: int) -> float:
        """Cooldown after the ``trips``-th trip in a row (1-based)."""
        return min(self.max_cooldown_s, self.cooldown_s * self.cooldown_multiplier ** max(0, trips - 1))


@dataclass(frozen=True, slots=True)
class Permit:
    """The answer to "may I call this target now?"."""

    allowed: bool
    state: BreakerState
    probe: bool = False  # this call is the single half-open probe
    retry_in_s: float = 0.0  # when refused: time until the target may be tried again


@dataclass(frozen=True, slots=True)
class Transition:
    old: BreakerState
    new: BreakerState
    reason: str


@dataclass(slots=True)
class BreakerSnapshot:
    state: BreakerState
    calls: int  # in the current window
    failures: int
    consecutive_failures: int
    trips: int  # trips since the target last closed after a successful probe
    cooldown_remaining_s: float
    backend: str


class BreakerStore(Protocol):
    """Where breaker state lives. Both stores implement the same machine."""

    backend: str

    async def acquire(self, target: str, lease_s: float) -> tuple[Permit, Transition | None]: ...

    async def record(self, target: str, ok: bool, probe: bool) -> Transition | None: ...

    async def snapshot(self, target: str) -> BreakerSnapshot: ...


# --------------------------------------------------------------------------- in-process machine


@dataclass(slots=True)
class _Machine:
    state: BreakerState = BreakerState.CLOSED
    open_until: float = 0.0
    probe_until: float = 0.0
    trips: int = 0
    consecutive: int = 0
    # slot index -> [bucket id, calls, failures]
    slots: list[list[int]] = field(default_factory=lambda: [[-1, 0, 0] for _ in range(WINDOW_SLOTS)])


class MemoryBreakerStore:
    """Breaker state for one process. Also the fallback of the Redis store when Redis is down."""

    backend = "memory"

    def __init__(self, settings: BreakerSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.clock = clock
        self._machines: dict[str, _Machine] = {}

    def _get(self, target: str) -> _Machine:
        machine = self._machines.get(target)
        if machine is None:
            machine = self._machines[target] = _Machine()
        return machine

    def _bucket(self, now: float) -> int:
        return math.floor(now / (self.settings.window_s / WINDOW_SLOTS))

    def _window(self, m: _Machine, now: float) -> tuple[int, int]:
        current = self._bucket(now)
        calls = failures = 0
        for bucket, c, f in m.slots:
            if bucket > current - WINDOW_SLOTS:
                calls += c
                failures += f
        return calls, failures

    def _open(self, m: _Machine, now: float) -> None:
        m.trips += 1
        m.state = BreakerState.OPEN
        m.open_until = now + self.settings.cooldown_for(m.trips)
        m.probe_until = 0.0
        m.consecutive = 0
        m.slots = [[-1, 0, 0] for _ in range(WINDOW_SLOTS)]

    async def acquire(self, target: str, lease_s: float) -> tuple[Permit, Transition | None]:
        m = self._get(target)
        now = self.clock()
        if m.state is BreakerState.CLOSED:
            return Permit(True, BreakerState.CLOSED), None
        if m.state is BreakerState.OPEN:
            if now < m.open_until:
                return Permit(False, BreakerState.OPEN, retry_in_s=m.open_until - now), None
            m.state = BreakerState.HALF_OPEN
            m.probe_until = now + lease_s
            return (
                Permit(True, BreakerState.HALF_OPEN, probe=True),
                Transition(BreakerState.OPEN, BreakerState.HALF_OPEN, "cooldown over; sending one probe"),
            )
        if now < m.probe_until:  # a probe is in flight
            return Permit(False, BreakerState.HALF_OPEN, retry_in_s=m.probe_until - now), None
        m.probe_until = now + lease_s  # the previous probe's lease lapsed without an outcome
        return Permit(True, BreakerState.HALF_OPEN, probe=True), None

    async def record(self, target: str, ok: bool, probe: bool) -> Transition | None:
        m = self._get(target)
        now = self.clock()
        s = self.settings
        if m.state is BreakerState.HALF_OPEN:
            if not probe:
                return None  # a call that started before the trip; only the probe decides
            if ok:
                self._machines[target] = _Machine()
                return Transition(BreakerState.HALF_OPEN, BreakerState.CLOSED, "probe succeeded")
            self._open(m, now)
            return Transition(BreakerState.HALF_OPEN, BreakerState.OPEN, "probe failed")
        if m.state is BreakerState.OPEN:
            return None
        bucket = self._bucket(now)
        slot = m.slots[bucket % WINDOW_SLOTS]
        if slot[0] != bucket:
            slot[:] = [bucket, 0, 0]
        slot[1] += 1
        if ok:
            m.consecutive = 0
            return None
        slot[2] += 1
        m.consecutive += 1
        calls, failures = self._window(m, now)
        if m.consecutive >= s.consecutive_failures:
            reason = f"{m.consecutive} consecutive failures"
        elif calls >= s.min_calls and failures / calls >= s.failure_ratio:
            reason = f"{failures}/{calls} calls failed in {s.window_s:g}s"
        else:
            return None
        self._open(m, now)
        return Transition(BreakerState.CLOSED, BreakerState.OPEN, reason)

    async def snapshot(self, target: str) -> BreakerSnapshot:
        m = self._get(target)
        now = self.clock()
        calls, failures = self._window(m, now)
        remaining = max(0.0, m.open_until - now) if m.state is BreakerState.OPEN else 0.0
        return BreakerSnapshot(m.state, calls, failures, m.consecutive, m.trips, remaining, self.backend)


# --------------------------------------------------------------------------- facade and registry

#: Called on every state change: (target, transition).
ChangeListener = Callable[[str, Transition], None]


class CircuitBreaker:
    """The breaker of one target; a thin facade that logs and reports state changes."""

    def __init__(self, target: str, store: BreakerStore, on_change: ChangeListener | None = None) -> None:
        self.target = target
        self.store = store
        self.on_change = on_change

    async def acquire(self, lease_s: float) -> Permit:
        """Ask to call the target; ``lease_s`` bounds how long a half-open probe may hold its slot."""
        permit, transition = await self.store.acquire(self.target, lease_s)
        self._changed(transition)
        return permit

    async def record(self, permit: Permit, ok: bool) -> None:
        self._changed(await self.store.record(self.target, ok, permit.probe))

    async def record_error(self, permit: Permit, error: ProviderError) -> None:
        """Only backend-health errors count; a rejected request means the target answered."""
        await self.record(permit, error.kind not in BREAKER_KINDS)

    async def snapshot(self) -> BreakerSnapshot:
        return await self.store.snapshot(self.target)

    def _changed(self, transition: Transition | None) -> None:
        if transition is None:
            return
        log.warning(
            "circuit %s: %s -> %s (%s)",
            self.target,
            transition.old.value,
            transition.new.value,
            transition.reason,
            extra={"target": self.target, "breaker_state": transition.new.value},
        )
        if self.on_change is not None:
            try:
                self.on_change(self.target, transition)
            except Exception:  # an observer must never break a request
                log.exception("breaker listener failed")


class BreakerRegistry:
    """Breakers by target string ("bailian:qwen-plus"), all sharing one store."""

    def __init__(self, store: BreakerStore, on_change: ChangeListener | None = None) -> None:
        self.store = store
        self.on_change = on_change
        self._breakers: dict[str, CircuitBreaker] = {}

    @classmethod
    def in_memory(cls, config: Any, on_change: ChangeListener | None = None) -> BreakerRegistry:
        return cls(MemoryBreakerStore(BreakerSettings.from_config(config)), on_change)

    @property
    def backend(self) -> str:
        return self.store.backend

    def get(self, target: Any) -> CircuitBreaker:
        key = str(target)
        breaker = self._breakers.get(key)
        if breaker is None:
            breaker = self._breakers[key] = CircuitBreaker(key, self.store, self._notify)
        return breaker

    def _notify(self, target: str, transition: Transition) -> None:
        if self.on_change is not None:
            self.on_change(target, transition)

    def targets(self) -> list[str]:
        return list(self._breakers)
