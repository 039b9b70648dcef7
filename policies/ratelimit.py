"""Per-key rate limits: requests/min, tokens/min (GCRA) and concurrent requests.

One check is ONE atomic operation: with Redis a single Lua script evaluates all three limits
and charges them only if every one passes, using the Redis server's clock, so any number of
gateway replicas share one exact limit (a limit of N admits exactly N in a burst, not N per
replica). Without Redis the same arithmetic runs in process (one event loop: atomic too).

GCRA (generic cell rate algorithm): a limit of N per period T allows a burst of N, then one
more every T/N. State per key is one number, the theoretical arrival time (TAT).
Tokens are charged up front from an estimate and reconciled with the real count afterwards
(``adjust_tokens``): refunds move the TAT back, overruns push it forward.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any, Protocol

from redis.exceptions import RedisError

log = logging.getLogger("talkgate.ratelimit")

PERIOD_S = 60.0
_EPOCH_S = 1_750_000_000  # keeps microsecond timestamps well inside double precision
_TOLERANCE_US = 1.0  # float rounding slack; far below any emission interval we accept


@dataclass(frozen=True, slots=True)
class Limits:
    """None (or 0) means unlimited."""

    rpm: int | None = None
    tpm: int | None = None
    concurrency: int | None = None

    @property
    def any(self) -> bool:
        return bool(self.rpm or self.tpm or self.concurrency)


@dataclass(frozen=True, slots=True)
class Window:
    limit: int
    remaining: int
    reset_s: float  # until the bucket is full again


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str | None = None  # "requests" | "tokens" | "concurrency" when refused
    retry_after_s: float = 0.0
    requests: Window | None = None
    tokens: Window | None = None
    slot: str | None = None  # concurrency slot to release, when one was taken

    def headers(self) -> dict[str, str]:
        """OpenAI's x-ratelimit-* headers (and Retry-After when refused)."""
        out: dict[str, str] = {}
        for name, w in (("requests", self.requests), ("tokens", self.tokens)):
            if w is not None:
                out[f"x-ratelimit-limit-{name}"] = str(w.limit)
                out[f"x-ratelimit-remaining-{name}"] = str(max(0, w.remaining))
                out[f"x-ratelimit-reset-{name}"] = format_duration(w.reset_s)
        if not self.allowed:
            out["retry-after"] = str(max(1, math.ceil(self.retry_after_s)))
        return out


def format_duration(seconds: float) -> str:
    """OpenAI's reset format: ``20ms``, ``1.5s``, ``6m0s``."""
    seconds = max(0.0, seconds)
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    if seconds < 60:
        return f"{seconds:.3g}s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m{rest}s"


class RateLimiter(Protocol):
    async def acquire(self, key_id: str, limits: Limits, tokens: int = 0) -> Decision: ...

    async def release(self, key_id: str, slot: str) -> None: ...

    async def adjust_tokens(self, key_id: str, limits: Limits, delta: int) -> None: ...

    async def renew(self, key_id: str, slot: str) -> None: ...


def _cost(limits: Limits, tokens: int) -> int:
    """An estimate above the whole per-minute budget is clamped to it (reconciled later)."""
    return min(max(0, tokens), limits.tpm) if limits.tpm else 0


_REASONS = {1: "requests", 2: "tokens", 3: "concurrency"}

# KEYS: requests TAT, tokens TAT, concurrency zset.
# ARGV: rpm, tpm, token cost, concurrency limit, slot id, lease (us), period (us), epoch (s).
# Returns {allowed, reason, retry_us, req_remaining, req_reset_us, tok_remaining, tok_reset_us}.
_ACQUIRE_LUA = """
local t = redis.call('TIME')
local now = (tonumber(t[1]) - tonumber(ARGV[8])) * 1000000 + tonumber(t[2])
local period = tonumber(ARGV[7])
local rpm, tpm, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local conc = tonumber(ARGV[4])

local function gcra(key, limit, c)
  local e = period / limit
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  local new_tat = tat + c * e
  local wait = new_tat - period - now
  if wait > 1 then
    return 0, tat, math.floor((period - (tat - now)) / e + 1e-6), tat - now, wait
  end
  return 1, new_tat, math.floor((period - (new_tat - now)) / e + 1e-6), new_tat - now, 0
end

if conc > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  if redis.call('ZCARD', KEYS[3]) >= conc then
    return {0, 3, 1000000, -1, 0, -1, 0}
  end
end
local r_ok, r_tat, r_rem, r_reset, r_wait = 1, 0, -1, 0, 0
local t_ok, t_tat, t_rem, t_reset, t_wait = 1, 0, -1, 0, 0
if rpm > 0 then r_ok, r_tat, r_rem, r_reset, r_wait = gcra(KEYS[1], rpm, 1) end
if tpm > 0 then t_ok, t_tat, t_rem, t_reset, t_wait = gcra(KEYS[2], tpm, cost) end
if r_ok == 0 then return {0, 1, r_wait, r_rem, r_reset, t_rem, t_reset} end
if t_ok == 0 then return {0, 2, t_wait, r_rem, r_reset, t_rem, t_reset} end
if rpm > 0 then redis.call('SET', KEYS[1], r_tat, 'PX', math.ceil(r_reset / 1000) + 1) end
if tpm > 0 and cost > 0 then redis.call('SET', KEYS[2], t_tat, 'PX', math.ceil(t_reset / 1000) + 1) end
if conc > 0 then
  local lease = tonumber(ARGV[6])
  redis.call('ZADD', KEYS[3], now + lease, ARGV[5])
  redis.call('PEXPIRE', KEYS[3], math.ceil(lease / 1000) + 1)
end
return {1, 0, 0, r_rem, r_reset, t_rem, t_reset}
"""

# KEYS: tokens TAT. ARGV: tpm, delta tokens, period (us), epoch (s).
_ADJUST_LUA = """
local t = redis.call('TIME')
local now = (tonumber(t[1]) - tonumber(ARGV[4])) * 1000000 + tonumber(t[2])
local e = tonumber(ARGV[3]) / tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
tat = tat + tonumber(ARGV[2]) * e
if tat <= now then redis.call('DEL', KEYS[1]) return 0 end
redis.call('SET', KEYS[1], tat, 'PX', math.ceil((tat - now) / 1000) + 1)
return 1
"""


# KEYS: concurrency zset. ARGV: slot id, lease (us), epoch (s). Extends a held slot's lease.
_RENEW_LUA = """
local t = redis.call('TIME')
local now = (tonumber(t[1]) - tonumber(ARGV[3])) * 1000000 + tonumber(t[2])
local lease = tonumber(ARGV[2])
local n = redis.call('ZADD', KEYS[1], 'XX', 'CH', now + lease, ARGV[1])
redis.call('PEXPIRE', KEYS[1], math.ceil(lease / 1000) + 1)
return n
"""


def _windows(limits: Limits, res: list[Any]) -> tuple[Window | None, Window | None]:
    req = Window(limits.rpm, int(res[3]), float(res[4]) / 1e6) if limits.rpm else None
    tok = Window(limits.tpm, int(res[5]), float(res[6]) / 1e6) if limits.tpm else None
    return req, tok


class RedisRateLimiter:
    """Limits shared by every replica through one Redis (one EVALSHA per check)."""

    def __init__(self, redis: Any, *, prefix: str = "tg:rl", lease_s: float = 900.0) -> None:
        self.redis = redis
        self.prefix = prefix
        self.lease_s = lease_s
        self._acquire = redis.register_script(_ACQUIRE_LUA)
        self._adjust = redis.register_script(_ADJUST_LUA)
        self._renew = redis.register_script(_RENEW_LUA)

    def _keys(self, key_id: str) -> list[str]:
        base = f"{self.prefix}:{{{key_id}}}"  # hash tag: one cluster slot per key
        return [f"{base}:r", f"{base}:t", f"{base}:c"]

    async def acquire(self, key_id: str, limits: Limits, tokens: int = 0) -> Decision:
        if not limits.any:
            return Decision(True)
        slot = uuid.uuid4().hex if limits.concurrency else None
        res = await self._acquire(
            keys=self._keys(key_id),
            args=[
                limits.rpm or 0,
                limits.tpm or 0,
                _cost(limits, tokens),
                limits.concurrency or 0,
                slot or "",
                int(self.lease_s * 1e6),
                int(PERIOD_S * 1e6),
                _EPOCH_S,
            ],
        )
        req, tok = _windows(limits, res)
        if int(res[0]) != 1:
            return Decision(False, _REASONS[int(res[1])], float(res[2]) / 1e6, req, tok)
        return Decision(True, None, 0.0, req, tok, slot)

    async def release(self, key_id: str, slot: str) -> None:
        await self.redis.zrem(self._keys(key_id)[2], slot)

    async def renew(self, key_id: str, slot: str) -> None:
        """Extends a held slot's lease (a realtime session holds one for longer than a lease)."""
        await self._renew(keys=[self._keys(key_id)[2]], args=[slot, int(self.lease_s * 1e6), _EPOCH_S])

    async def adjust_tokens(self, key_id: str, limits: Limits, delta: int) -> None:
        if limits.tpm and delta:
            await self._adjust(
                keys=[self._keys(key_id)[1]], args=[limits.tpm, delta, int(PERIOD_S * 1e6), _EPOCH_S]
            )


class MemoryRateLimiter:
    """The same limits for a single process (no Redis). Not shared between replicas."""

    def __init__(self, *, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self._tat: dict[str, float] = {}  # "<key>:r" / "<key>:t" -> TAT in microseconds
        self._slots: dict[str, set[str]] = {}
        self._checks = 0

    def _prune(self, now: float) -> None:
        """Forget buckets that are full again (keeps memory bounded by active keys)."""
        for name in [n for n, tat in self._tat.items() if tat <= now]:
            del self._tat[name]

    def _now(self) -> float:
        return self._clock() * 1e6

    def _gcra(self, name: str, limit: int, cost: int, now: float) -> tuple[bool, float, Window, float]:
        period = PERIOD_S * 1e6
        e = period / limit
        tat = max(self._tat.get(name, now), now)
        new_tat = tat + cost * e
        wait = new_tat - period - now
        if wait > _TOLERANCE_US:
            return (
                False,
                tat,
                Window(limit, math.floor((period - (tat - now)) / e + 1e-6), (tat - now) / 1e6),
                wait,
            )
        remaining = math.floor((period - (new_tat - now)) / e + 1e-6)
        return True, new_tat, Window(limit, remaining, (new_tat - now) / 1e6), 0.0

    async def acquire(self, key_id: str, limits: Limits, tokens: int = 0) -> Decision:
        if not limits.any:
            return Decision(True)
        now = self._now()
        self._checks += 1
        if self._checks % 4096 == 0:
            self._prune(now)
        if limits.concurrency and len(self._slots.get(key_id, ())) >= limits.concurrency:
            return Decision(False, "concurrency", 1.0)
        req = tok = None
        r_tat = t_tat = 0.0
        if limits.rpm:
            ok, r_tat, req, wait = self._gcra(f"{key_id}:r", limits.rpm, 1, now)
            if not ok:
                return Decision(False, "requests", wait / 1e6, req, None)
        if limits.tpm:
            ok, t_tat, tok, wait = self._gcra(f"{key_id}:t", limits.tpm, _cost(limits, tokens), now)
            if not ok:
                return Decision(False, "tokens", wait / 1e6, req, tok)
        if limits.rpm:
            self._tat[f"{key_id}:r"] = r_tat
        if limits.tpm:
            self._tat[f"{key_id}:t"] = t_tat
        slot = None
        if limits.concurrency:
            slot = uuid.uuid4().hex
            self._slots.setdefault(key_id, set()).add(slot)
        return Decision(True, None, 0.0, req, tok, slot)

    async def release(self, key_id: str, slot: str) -> None:
        slots = self._slots.get(key_id)
        if slots is not None:
            slots.discard(slot)
            if not slots:
                self._slots.pop(key_id, None)

    async def adjust_tokens(self, key_id: str, limits: Limits, delta: int) -> None:
        if not limits.tpm or not delta:
            return
        now = self._now()
        name = f"{key_id}:t"
        tat = max(self._tat.get(name, now), now) + delta * (PERIOD_S * 1e6 / limits.tpm)
        if tat <= now:
            self._tat.pop(name, None)
        else:
            self._tat[name] = tat

    async def renew(self, key_id: str, slot: str) -> None:
        """Slots here have no lease: nothing to extend."""

    def in_flight(self, key_id: str) -> int:
        return len(self._slots.get(key_id, ()))


class FailoverRateLimiter:
    """Redis when it answers, else this process's own limiter (logged), so a Redis outage
    degrades limits to per-replica instead of failing requests."""

    def __init__(self, primary: RedisRateLimiter, fallback: MemoryRateLimiter | None = None) -> None:
        self.primary = primary
        self.fallback = fallback or MemoryRateLimiter()
        self._warned_at = 0.0

    def _warn(self, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._warned_at > 30:
            self._warned_at = now
            log.warning("Redis rate limiter unavailable, limiting per process meanwhile: %r", exc)

    async def acquire(self, key_id: str, limits: Limits, tokens: int = 0) -> Decision:
        try:
            return await self.primary.acquire(key_id, limits, tokens)
        except (OSError, RedisError) as exc:
            self._warn(exc)
            decision = await self.fallback.acquire(key_id, limits, tokens)
            if decision.slot:
                decision = replace(decision, slot=_LOCAL + decision.slot)
            return decision

    async def release(self, key_id: str, slot: str) -> None:
        if slot.startswith(_LOCAL):
            await self.fallback.release(key_id, slot.removeprefix(_LOCAL))
            return
        try:
            await self.primary.release(key_id, slot)
        except (OSError, RedisError) as exc:  # the lease frees it later
            self._warn(exc)

    async def renew(self, key_id: str, slot: str) -> None:
        if slot.startswith(_LOCAL):
            return
        try:
            await self.primary.renew(key_id, slot)
        except (OSError, RedisError) as exc:  # the slot may lapse: fewer sessions counted, not more
            self._warn(exc)

    async def adjust_tokens(self, key_id: str, limits: Limits, delta: int) -> None:
        try:
            await self.primary.adjust_tokens(key_id, limits, delta)
        except (OSError, RedisError) as exc:
            self._warn(exc)
            await self.fallback.adjust_tokens(key_id, limits, delta)


_LOCAL = "local:"
