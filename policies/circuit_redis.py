"""The breaker state machine in Redis, shared by every gateway process.

Each target is one hash. Two Lua scripts run the machine atomically on the Redis server,
with the server's clock, so replicas never race and never disagree on time:

* ``ACQUIRE`` answers "may I call?" and, once the cooldown has passed, hands out the
  single half-open probe as a lease (``probe_until``) — nobody else gets through until the
  probe reports or its lease lapses;
* ``RECORD`` adds an outcome to the sliding window and trips, closes or re-opens.

So a request costs one EVALSHA before and one after its upstream call. If Redis fails,
the store logs it once, keeps serving from in-process state for ``retry_redis_after_s``,
then tries Redis again: requests never fail because Redis is down.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any

from redis.exceptions import RedisError

from policies.circuit import (
    WINDOW_SLOTS,
    BreakerSettings,
    BreakerSnapshot,
    BreakerState,
    MemoryBreakerStore,
    Permit,
    Transition,
)

log = logging.getLogger("talkgate.circuit")

KEY_PREFIX = "talkgate:breaker:"

# KEYS[1] hash; ARGV: lease_ms, ttl_s.
# Returns {allowed, state, wait_ms, probe, previous_state_if_changed}.
ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local h = redis.call('HMGET', KEYS[1], 'state', 'open_until', 'probe_until')
local state = h[1] or 'closed'
if state == 'closed' then return {1, 'closed', 0, 0, ''} end
local lease = tonumber(ARGV[1])
if state == 'open' then
  local open_until = tonumber(h[2]) or 0
  if now < open_until then return {0, 'open', open_until - now, 0, ''} end
  redis.call('HSET', KEYS[1], 'state', 'half_open', 'probe_until', now + lease)
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  return {1, 'half_open', 0, 1, 'open'}
end
local probe_until = tonumber(h[3]) or 0
if now < probe_until then return {0, 'half_open', probe_until - now, 0, ''} end
redis.call('HSET', KEYS[1], 'probe_until', now + lease)
redis.call('EXPIRE', KEYS[1], ARGV[2])
return {1, 'half_open', 0, 1, ''}
"""

# KEYS[1] hash; ARGV: ok, probe, window_ms, slots, min_calls, ratio, consecutive, cooldown_ms,
# max_cooldown_ms, multiplier, ttl_s.  Returns {new_state, old_state_if_changed, reason}.
RECORD = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local key = KEYS[1]
local ok = ARGV[1] == '1'
local probe = ARGV[2] == '1'
local nslots = tonumber(ARGV[4])
local state = redis.call('HGET', key, 'state') or 'closed'

local function trip(reason)
  local trips = redis.call('HINCRBY', key, 'trips', 1)
  local cooldown = math.min(tonumber(ARGV[9]), tonumber(ARGV[8]) * tonumber(ARGV[10]) ^ (trips - 1))
  for i = 0, nslots - 1 do redis.call('HDEL', key, 'i' .. i, 'c' .. i, 'f' .. i) end
  redis.call('HSET', key, 'state', 'open', 'open_until', now + math.floor(cooldown), 'probe_until', 0,
             'consec', 0)
  redis.call('EXPIRE', key, ARGV[11])
  return {'open', state, reason}
end

if state == 'half_open' then
  if not probe then return {state, '', ''} end
  if ok then
    redis.call('DEL', key)
    return {'closed', 'half_open', 'probe succeeded'}
  end
  return trip('probe failed')
end
if state == 'open' then return {state, '', ''} end

local width = tonumber(ARGV[3]) / nslots
local bucket = math.floor(now / width)
local slot = bucket % nslots
if tonumber(redis.call('HGET', key, 'i' .. slot) or -1) ~= bucket then
  redis.call('HSET', key, 'i' .. slot, bucket, 'c' .. slot, 0, 'f' .. slot, 0)
end
redis.call('HINCRBY', key, 'c' .. slot, 1)
redis.call('EXPIRE', key, ARGV[11])
if ok then
  redis.call('HSET', key, 'consec', 0)
  return {state, '', ''}
end
redis.call('HINCRBY', key, 'f' .. slot, 1)
local consec = redis.call('HINCRBY', key, 'consec', 1)
if consec >= tonumber(ARGV[7]) then return trip(consec .. ' consecutive failures') end
local calls, fails = 0, 0
for i = 0, nslots - 1 do
  local v = redis.call('HMGET', key, 'i' .. i, 'c' .. i, 'f' .. i)
  if v[1] and tonumber(v[1]) > bucket - nslots then
    calls = calls + tonumber(v[2] or 0)
    fails = fails + tonumber(v[3] or 0)
  end
end
if calls >= tonumber(ARGV[5]) and fails / calls >= tonumber(ARGV[6]) then
  return trip(fails .. '/' .. calls .. ' calls failed in the window')
end
return {state, '', ''}
"""


class RedisBreakerStore:
    """Breaker state shared through Redis, with in-process state as the fallback."""

    def __init__(
        self,
        redis: Any,
        settings: BreakerSettings,
        *,
        key_prefix: str = KEY_PREFIX,
        retry_redis_after_s: float = 5.0,
        op_timeout_s: float = 0.25,
    ) -> None:
        self.redis = redis
        self.settings = settings
        self.key_prefix = key_prefix
        self.retry_redis_after_s = retry_redis_after_s
        # Our own bound: the shared client may retry a dead server for seconds.
        self.op_timeout_s = op_timeout_s
        self.fallback = MemoryBreakerStore(settings)
        self._acquire = redis.register_script(ACQUIRE)
        self._record = redis.register_script(RECORD)
        self._down_until = 0.0
        # Keep idle keys long enough to outlive the longest cooldown and one window.
        self._ttl_s = int(settings.max_cooldown_s + settings.window_s) + 60

    @property
    def backend(self) -> str:
        return "memory (redis unreachable)" if self.degraded else "redis"

    @property
    def degraded(self) -> bool:
        """True while Redis is unreachable and breakers are per process."""
        return time.monotonic() < self._down_until

    def _key(self, target: str) -> str:
        return self.key_prefix + target

    def _redis_failed(self, exc: BaseException) -> None:
        if not self.degraded:
            log.warning(
                "Redis is unreachable for circuit breakers (%s); using in-process breaker state for %.0fs",
                exc,
                self.retry_redis_after_s,
            )
        self._down_until = time.monotonic() + self.retry_redis_after_s

    async def acquire(self, target: str, lease_s: float) -> tuple[Permit, Transition | None]:
        if self.degraded:
            return await self.fallback.acquire(target, lease_s)
        try:
            async with asyncio.timeout(self.op_timeout_s):
                allowed, state, wait_ms, probe, previous = await self._acquire(
                    keys=[self._key(target)], args=[max(1, int(lease_s * 1000)), self._ttl_s]
                )
        except (RedisError, OSError, TimeoutError) as exc:
            self._redis_failed(exc)
            return await self.fallback.acquire(target, lease_s)
        new = BreakerState(_text(state))
        permit = Permit(bool(allowed), new, probe=bool(probe), retry_in_s=int(wait_ms) / 1000)
        prev = _text(previous)
        transition = Transition(BreakerState(prev), new, "cooldown over; sending one probe") if prev else None
        return permit, transition

    async def record(self, target: str, ok: bool, probe: bool) -> Transition | None:
        if self.degraded:
            return await self.fallback.record(target, ok, probe)
        s = self.settings
        args = [
            int(ok),
            int(probe),
            int(s.window_s * 1000),
            WINDOW_SLOTS,
            s.min_calls,
            repr(float(s.failure_ratio)),
            s.consecutive_failures,
            int(s.cooldown_s * 1000),
            int(s.max_cooldown_s * 1000),
            repr(float(s.cooldown_multiplier)),
            self._ttl_s,
        ]
        try:
            async with asyncio.timeout(self.op_timeout_s):
                new, old, reason = await self._record(keys=[self._key(target)], args=args)
        except (RedisError, OSError, TimeoutError) as exc:
            self._redis_failed(exc)
            return await self.fallback.record(target, ok, probe)
        if not _text(old):
            return None
        return Transition(BreakerState(_text(old)), BreakerState(_text(new)), _text(reason))

    async def snapshot(self, target: str) -> BreakerSnapshot:
        if self.degraded:
            snap = await self.fallback.snapshot(target)
            snap.backend = self.backend
            return snap
        try:
            async with asyncio.timeout(self.op_timeout_s), self.redis.pipeline(transaction=False) as pipe:
                pipe.time()
                pipe.hgetall(self._key(target))
                (sec, usec), raw = await pipe.execute()
        except (RedisError, OSError, TimeoutError) as exc:
            self._redis_failed(exc)
            return await self.snapshot(target)
        h = {_text(k): _text(v) for k, v in raw.items()}
        now_ms = int(sec) * 1000 + int(usec) // 1000
        bucket = math.floor(now_ms / (int(self.settings.window_s * 1000) / WINDOW_SLOTS))
        calls = failures = 0
        for i in range(WINDOW_SLOTS):
            if int(h.get(f"i{i}", -1)) > bucket - WINDOW_SLOTS:
                calls += int(h.get(f"c{i}", 0))
                failures += int(h.get(f"f{i}", 0))
        state = BreakerState(h.get("state", "closed"))
        remaining = 0.0
        if state is BreakerState.OPEN:
            remaining = max(0.0, (int(h.get("open_until", 0)) - now_ms) / 1000)
        return BreakerSnapshot(
            state, calls, failures, int(h.get("consec", 0)), int(h.get("trips", 0)), remaining, self.backend
        )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
