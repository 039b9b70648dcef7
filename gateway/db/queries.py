"""Usage aggregation in SQL that runs unchanged on SQLite and PostgreSQL.

Buckets are computed from ``ts_ms`` (epoch milliseconds) with integer floor division, which
both databases evaluate the same way, instead of dialect-specific date functions.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.db.models import UsageRecord

BUCKET_MS = {"minute": 60_000, "hour": 3_600_000, "day": 86_400_000}
GROUP_COLUMNS = {
    "key": UsageRecord.key_id,
    "tenant": UsageRecord.tenant,
    "route": UsageRecord.route,
    "provider": UsageRecord.provider,
    "model": UsageRecord.model,
}
CSV_COLUMNS = (
    "bucket",
    "group",
    "requests",
    "errors",
    "cache_hits",
    "fallbacks",
    "tokens_in",
    "tokens_out",
    "characters",
    "audio_seconds",
    "video_seconds",
    "avg_latency_ms",
)


async def sum_usage(
    sessions: async_sessionmaker[AsyncSession], tenant: str, since_ms: int, until_ms: int
) -> dict[str, float]:
    """Quota-relevant totals for one tenant in [since, until)."""
    q = select(
        func.coalesce(func.sum(UsageRecord.tokens_in + UsageRecord.tokens_out), 0),
        func.coalesce(func.sum(UsageRecord.characters), 0),
        func.coalesce(func.sum(UsageRecord.audio_seconds), 0.0),
        func.coalesce(func.sum(UsageRecord.video_seconds), 0.0),
    ).where(UsageRecord.tenant == tenant, UsageRecord.ts_ms >= since_ms, UsageRecord.ts_ms < until_ms)
    async with sessions() as s:
        row = (await s.execute(q)).one()
    return {
        "tokens": float(row[0]),
        "tts_chars": float(row[1]),
        "asr_seconds": float(row[2]),
        "video_seconds": float(row[3]),
    }


async def aggregate_usage(
    sessions: async_sessionmaker[AsyncSession],
    *,
    group_by: str,
    bucket: str,
    since_ms: int | None = None,
    until_ms: int | None = None,
    tenant: str | None = None,
) -> list[dict[str, Any]]:
    """Rows of totals per (bucket, group), oldest bucket first."""
    size = BUCKET_MS[bucket]
    group_col = GROUP_COLUMNS[group_by]
    bucket_col = ((UsageRecord.ts_ms // size) * size).label("bucket")
    q = select(
        bucket_col,
        group_col.label("grp"),
        func.count().label("requests"),
        func.sum(case((UsageRecord.status >= 400, 1), else_=0)).label("errors"),
        func.sum(case((UsageRecord.cache == "hit", 1), else_=0)).label("cache_hits"),
        func.sum(case((UsageRecord.fallback.is_(True), 1), else_=0)).label("fallbacks"),
        func.sum(UsageRecord.tokens_in).label("tokens_in"),
        func.sum(UsageRecord.tokens_out).label("tokens_out"),
        func.sum(UsageRecord.characters).label("characters"),
        func.sum(UsageRecord.audio_seconds).label("audio_seconds"),
        func.sum(UsageRecord.video_seconds).label("video_seconds"),
        func.avg(UsageRecord.latency_ms).label("avg_latency_ms"),
    )
    if since_ms is not None:
        q = q.where(UsageRecord.ts_ms >= since_ms)
    if until_ms is not None:
        q = q.where(UsageRecord.ts_ms < until_ms)
    if tenant is not None:
        q = q.where(UsageRecord.tenant == tenant)
    q = q.group_by(bucket_col, group_col).order_by(bucket_col, group_col)
    async with sessions() as s:
        rows = (await s.execute(q)).all()
    out = []
    for r in rows:
        out.append(
            {
                "bucket": datetime.fromtimestamp(int(r.bucket) / 1000, UTC)
                .isoformat()
                .replace("+00:00", "Z"),
                "group": r.grp,
                "requests": int(r.requests),
                "errors": int(r.errors or 0),
                "cache_hits": int(r.cache_hits or 0),
                "fallbacks": int(r.fallbacks or 0),
                "tokens_in": int(r.tokens_in or 0),
                "tokens_out": int(r.tokens_out or 0),
                "characters": int(r.characters or 0),
                "audio_seconds": round(float(r.audio_seconds or 0.0), 3),
                "video_seconds": round(float(r.video_seconds or 0.0), 3),
                "avg_latency_ms": round(float(r.avg_latency_ms or 0.0), 3),
            }
        )
    return out
