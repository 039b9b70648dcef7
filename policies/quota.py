"""Per-tenant monthly quotas: tokens, TTS characters, ASR seconds, video seconds.

Counters live per tenant and calendar month (UTC). The usage writer adds each flushed batch
to them (``add``), so they trail real usage by at most one flush interval (about a second).
A request is admitted while its tenant is under quota; one that starts under quota may end
slightly over it. Counters are seeded from the usage table the first time a month is seen
(so a Redis flush or a restart loses nothing): in Redis they are shared by all replicas,
otherwise kept in process.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from redis.exceptions import RedisError

log = logging.getLogger("talkgate.quota")

QUOTAS = ("tokens", "tts_chars", "asr_seconds", "video_seconds")
#: Which quotas a request of each scope draws on.
QUOTAS_FOR_SCOPE: dict[str, tuple[str, ...]] = {
    "chat": ("tokens",),
    "tts": ("tts_chars",),
    "asr": ("asr_seconds",),
    "avatars": ("video_seconds",),
    "talk": QUOTAS,
    "realtime": ("tokens", "tts_chars", "asr_seconds"),
}
_UNITS = {"tokens": "tokens", "tts_chars": "TTS characters", "asr_seconds": "ASR seconds",
          "video_seconds": "video seconds"}  # fmt: skip

SumFromDb = Callable[[str, int, int], Awaitable[dict[str, float]]]

_ADD_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
for i = 1, #ARGV, 2 do redis.call('HINCRBYFLOAT', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 1
"""


class QuotaExceeded(Exception):
    def __init__(
        self, tenant: str, quota: str, used: float, limit: float, resets_at: datetime, needed: float = 0.0
    ) -> None:
        self.tenant = tenant
        self.quota = quota
        self.used = used
        self.limit = limit
        self.resets_at = resets_at
        reset = resets_at.isoformat().replace("+00:00", "Z")
        if needed and used < limit:
            message = (
                f"Tenant '{tenant}' has {_fmt(limit - used)} of its monthly {_fmt(limit)} "
                f"{_UNITS[quota]} left; this request needs {_fmt(needed)}. The quota resets at {reset}."
            )
        else:
            message = (
                f"Tenant '{tenant}' has used its monthly quota of {_UNITS[quota]} "
                f"({_fmt(used)} of {_fmt(limit)}). The quota resets at {reset}."
            )
        super().__init__(message)

    def retry_after_s(self) -> int:
        return max(1, int((self.resets_at - datetime.now(UTC)).total_seconds()))


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


def month_bounds(now: datetime | None = None) -> tuple[datetime, datetime]:
    now = now or datetime.now(UTC)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )
    return start, end


def month_of(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, UTC).strftime("%Y%m")


class QuotaTracker:
    def __init__(self, sum_from_db: SumFromDb, redis: Any = None, *, prefix: str = "tg:quota") -> None:
        self._sum_from_db = sum_from_db
        self.redis = redis
        self.prefix = prefix
        self._local: dict[tuple[str, str], dict[str, float]] = {}
        self._add_script = redis.register_script(_ADD_LUA) if redis is not None else None
        #: Optional observer(tenant, quota, used, limit) called on each check (metrics).
        self.observer: Any = None

    def _key(self, tenant: str, month: str) -> str:
        return f"{self.prefix}:{{{tenant}}}:{month}"

    async def check(
        self,
        tenant: str,
        quotas: dict[str, float | None],
        names: Iterable[str],
        needed: dict[str, float] | None = None,
    ) -> None:
        """Raises QuotaExceeded when any of ``names`` is set for the tenant and used up, or,
        with ``needed`` (e.g. a decoded upload's ASR seconds), would be overrun by this request."""
        needed = needed or {}
        limited = {n: quotas[n] for n in names if quotas.get(n) is not None}
        if not limited:
            return
        try:
            used = await self.used(tenant)
        except (OSError, RedisError) as exc:  # fail open: a Redis outage must not stop traffic
            log.warning("quota counters unavailable, admitting %s: %r", tenant, exc)
            return
        for name, limit in limited.items():
            if self.observer is not None:
                self.observer(tenant, name, used.get(name, 0.0), float(limit))  # type: ignore[arg-type]
            spent, want = used.get(name, 0.0), needed.get(name, 0.0)
            if spent >= float(limit) or (want and spent + want > float(limit)):  # type: ignore[arg-type]
                raise QuotaExceeded(tenant, name, spent, float(limit), month_bounds()[1], want)  # type: ignore[arg-type]

    async def used(self, tenant: str) -> dict[str, float]:
        start, end = month_bounds()
        month = start.strftime("%Y%m")
        if self.redis is None:
            counters = self._local.get((tenant, month))
            if counters is None:
                counters = await self._seed(tenant, start, end)
                self._local[(tenant, month)] = counters
            return dict(counters)
        key = self._key(tenant, month)
        raw = await self.redis.hgetall(key)
        if not raw:
            seed = await self._seed(tenant, start, end)
            async with self.redis.pipeline(transaction=True) as p:
                for name in QUOTAS:
                    p.hsetnx(key, name, seed[name])
                p.expire(key, 40 * 86400)
                await p.execute()
            raw = await self.redis.hgetall(key)
        return {(k.decode() if isinstance(k, bytes) else k): float(v) for k, v in raw.items()}

    async def _seed(self, tenant: str, start: datetime, end: datetime) -> dict[str, float]:
        sums = await self._sum_from_db(tenant, int(start.timestamp() * 1000), int(end.timestamp() * 1000))
        return {name: float(sums.get(name) or 0.0) for name in QUOTAS}

    async def add(self, totals: dict[tuple[str, str], dict[str, float]]) -> None:
        """Adds flushed usage, keyed by (tenant, YYYYMM). Months not yet seeded are skipped:
        seeding reads the usage table, which already holds these rows."""
        for (tenant, month), amounts in totals.items():
            if self.redis is None:
                counters = self._local.get((tenant, month))
                if counters is not None:
                    for name, value in amounts.items():
                        counters[name] = counters.get(name, 0.0) + value
                continue
            args: list[Any] = []
            for name, value in amounts.items():
                if value:
                    args += [name, repr(float(value))]
            if args:
                await self._add_script(keys=[self._key(tenant, month)], args=args)
