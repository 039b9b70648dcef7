"""Usage records: one row per admitted request, buffered in memory, written in batches.

Routes add measurements with ``record(request, tokens_in=..., characters=..., ...)``; the auth
dependency (``gateway.auth.require_scope``) closes the row when the response has been sent,
adding tenant, key, route, provider, fallback, cache, latency and status. Nothing on the
request path touches the database: ``UsageRecorder.add`` appends to a deque and a background
task inserts batches (``executemany``). A failed write keeps the batch and retries; shutdown
flushes everything that is left.

The ``model`` column holds what the client asked for, and the client may send any string; it is
booked only when it is shaped like a model name (``model_label``), else as ``UNKNOWN_MODEL``,
and a request refused with 404 ``model_not_found`` books ``UNKNOWN_MODEL`` too
(``gateway.errors.refuse_unknown_model``): usage is exported as CSV for spreadsheets, where a
tenant-chosen ``=HYPERLINK(...)`` or a line break must never land.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.requests import Request

from gateway.db.models import UsageRecord
from policies.quota import month_of

log = logging.getLogger("talkgate.usage")

#: Numeric measurements a route may report; they add up if recorded more than once.
MEASURES = ("tokens_in", "tokens_out", "characters", "audio_seconds", "video_seconds")
#: Descriptive fields a route may set (the last value wins).
LABELS = ("model", "provider", "status", "route")
COLUMNS = (
    "request_id", "ts_ms", "key_id", "tenant", "route", "provider", "model", "fallback", "cache",
    "tokens_in", "tokens_out", "characters", "audio_seconds", "video_seconds", "latency_ms", "status",
)  # fmt: skip


#: The model booked for a request whose model is not served here, or is not shaped like a name.
UNKNOWN_MODEL = "(unknown)"
#: What a model name looks like: a letter or digit, then name characters (``qwen-plus``,
#: ``bailian:qwen3-tts-flash``, ``org/model@v2``); at most 128 characters (the column's width).
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}")


def model_label(model: str | None) -> str | None:
    """The model as booked: the name itself when it looks like one, else ``UNKNOWN_MODEL``
    (None stays None: no model was involved)."""
    if model is None or model == "":
        return None
    return model if _MODEL_NAME.fullmatch(model) else UNKNOWN_MODEL


def record(request: Request, **fields: Any) -> None:
    """Adds measurements to this request's usage row (see MEASURES and LABELS).

    Example: ``record(request, tokens_in=12, tokens_out=30, model="qwen-plus")``. Safe to call
    from a streaming generator; the row is written once the response has finished.
    """
    from gateway.context import get_context

    pending = get_context(request).extra.setdefault("usage", {})
    for name, value in fields.items():
        if name in MEASURES:
            pending[name] = pending.get(name, 0) + (value or 0)
        elif name in LABELS:
            pending[name] = value
        else:
            raise TypeError(f"unknown usage field {name!r}")


_INSERT = insert(UsageRecord.__table__)
#: Rows per INSERT statement on SQLite (16 columns: 2,048 parameters, far below SQLite's 32,766).
#: executemany() steps once per row and the sqlite3 module releases and retakes the GIL around
#: every step, so under load the driver thread competed with the event loop for the GIL
#: thousands of times a second; one multi-row statement is one step.
_SQLITE_ROWS_PER_STATEMENT = 128
_SQLITE_ROW = "(" + ",".join("?" * len(COLUMNS)) + ")"
_SQLITE_HEAD = f"INSERT INTO {UsageRecord.__tablename__} ({','.join(COLUMNS)}) VALUES "


@functools.cache
def _sqlite_insert(rows: int) -> str:
    return _SQLITE_HEAD + ",".join([_SQLITE_ROW] * rows)


def _sqlite_statements(batch: list[dict[str, Any]]) -> Iterator[tuple[str, tuple[Any, ...]]]:
    """Multi-row INSERTs for ``batch``, with their positional parameters."""
    step = _SQLITE_ROWS_PER_STATEMENT
    for start in range(0, len(batch), step):
        rows = batch[start : start + step]
        yield _sqlite_insert(len(rows)), tuple(row[c] for row in rows for c in COLUMNS)


_DAY_MS = 86_400_000
#: quota_amounts()'s keys, in the order UsageRecorder._count_quota sums them.
_QUOTA_NAMES = ("tokens", "tts_chars", "asr_seconds", "video_seconds")


def quota_amounts(row: dict[str, Any]) -> dict[str, float]:
    return {
        "tokens": float(row.get("tokens_in", 0) + row.get("tokens_out", 0)),
        "tts_chars": float(row.get("characters", 0)),
        "asr_seconds": float(row.get("audio_seconds", 0.0)),
        "video_seconds": float(row.get("video_seconds", 0.0)),
    }


class UsageRecorder:
    """In-memory buffer plus a background batch writer."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        flush_interval_s: float = 1.0,
        batch_rows: int = 2000,
        buffer_rows: int = 200_000,
        quota: Any = None,
    ) -> None:
        self.sessions = sessions
        self.flush_interval_s = flush_interval_s
        self.batch_rows = batch_rows
        self.buffer_rows = buffer_rows
        self.quota = quota
        self.dropped = 0  # rows lost because the buffer overflowed while the DB was down
        self.written = 0
        self._buffer: deque[dict[str, Any]] = deque()
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def add(self, row: dict[str, Any]) -> None:
        """O(1), never blocks, never raises for a full buffer (drops the oldest row, counted)."""
        full = {c: row.get(c) for c in COLUMNS}
        for name in MEASURES:
            full[name] = full[name] or 0
        full["ts_ms"] = full["ts_ms"] or int(time.time() * 1000)
        full["fallback"] = bool(full["fallback"])
        full["cache"] = full["cache"] or "bypass"
        full["latency_ms"] = float(full["latency_ms"] or 0.0)
        full["status"] = int(full["status"] or 200)
        full["tenant"] = full["tenant"] or "default"
        full["route"] = full["route"] or "unknown"
        full["request_id"] = full["request_id"] or ""
        full["model"] = model_label(full["model"])
        if len(self._buffer) >= self.buffer_rows:
            self._buffer.popleft()
            self.dropped += 1
        self._buffer.append(full)
        if len(self._buffer) >= self.batch_rows:
            self._wake.set()

    async def start(self) -> None:
        if self._task is None:
            self._stopping = False
            self._wake = asyncio.Event()  # bound to the serving loop
            self._lock = asyncio.Lock()
            self._task = asyncio.create_task(self._run(), name="usage-writer")

    async def stop(self) -> None:
        """Stops the writer and flushes every buffered row (graceful shutdown)."""
        self._stopping = True
        if self._task is not None:
            # Let the writer finish its current batch (cancelling mid-commit could duplicate rows).
            self._wake.set()
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout=10)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            except Exception:
                log.exception("usage writer ended with an error")
            self._task = None
        for _ in range(5):  # a few attempts if the database blips during shutdown
            try:
                await self.flush()
                break
            except Exception:
                log.exception("usage flush at shutdown failed; retrying")
                await asyncio.sleep(0.2)
        if self._buffer:
            log.error("usage: %d rows could not be written at shutdown", len(self._buffer))

    async def _run(self) -> None:
        backoff = self.flush_interval_s
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=backoff)
            self._wake.clear()
            try:
                await self.flush()
                backoff = self.flush_interval_s
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("usage write failed; %d rows kept for retry", len(self._buffer))
                backoff = min(30.0, backoff * 2)

    async def flush(self) -> int:
        """Writes everything buffered now, in batches. Returns the rows written."""
        written = 0
        async with self._lock:
            while self._buffer:
                n = min(self.batch_rows, len(self._buffer))
                batch = [self._buffer.popleft() for _ in range(n)]
                try:
                    async with self.sessions() as s:
                        conn = await s.connection()
                        if conn.dialect.name == "sqlite":
                            for sql, params in _sqlite_statements(batch):
                                await conn.exec_driver_sql(sql, params)
                        else:
                            # A Core insert of the table (executemany): the ORM bulk path costs
                            # several times more per row, on the event loop.
                            await s.execute(_INSERT, batch)
                        await s.commit()
                except BaseException:
                    self._buffer.extendleft(reversed(batch))  # keep order, retry later
                    raise
                written += n
                self.written += n
                await self._count_quota(batch)
                await asyncio.sleep(0)  # requests go first between batches
        return written

    async def _count_quota(self, batch: list[dict[str, Any]]) -> None:
        if self.quota is None:
            return
        # Same sums as quota_amounts() per row, without a dict per row; runs on the event loop.
        sums: dict[tuple[str, int], list[float]] = {}
        for row in batch:
            # A UTC month starts at a UTC midnight, so the day number determines the month.
            acc = sums.get(group := (row["tenant"], row["ts_ms"] // _DAY_MS))
            if acc is None:
                acc = sums[group] = [0.0, 0.0, 0.0, 0.0]
            acc[0] += row.get("tokens_in", 0) + row.get("tokens_out", 0)
            acc[1] += row.get("characters", 0)
            acc[2] += row.get("audio_seconds", 0.0)
            acc[3] += row.get("video_seconds", 0.0)
        totals: dict[tuple[str, str], dict[str, float]] = {}
        for (tenant, day), acc in sums.items():
            total = totals.setdefault((tenant, month_of(day * _DAY_MS)), dict.fromkeys(_QUOTA_NAMES, 0.0))
            for name, value in zip(_QUOTA_NAMES, acc, strict=True):
                total[name] += float(value)
        try:
            await self.quota.add(totals)
        except Exception:  # the rows are safe in the DB; counters re-seed from it if lost
            log.exception("quota counter update failed")
