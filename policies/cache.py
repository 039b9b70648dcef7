"""Exact-match response cache for chat, TTS and ASR.

Keys are the SHA-256 of canonical JSON (sorted keys, integral floats written as integers) of
the tenant, the kind and the request parameters, so the same request always maps to the same
key (unlike hashes of re-serialised bodies) and two tenants never share an entry.
Values are the exact response bytes plus a little metadata, so a hit returns identical bytes.

Backends: Redis (shared, TTL, per-entry size cap; total size is Redis's maxmemory policy) or an
in-process LRU (TTL, entry count and total byte caps). Request controls:
``Cache-Control: no-store`` skips the cache, ``no-cache`` refreshes the entry (no lookup,
store the new answer), ``x-talkgate-cache: force`` caches a non-deterministic chat request and
``x-talkgate-cache: off`` skips the cache.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import struct
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

log = logging.getLogger("talkgate.cache")
_MAGIC = b"TGC1"


@dataclass(slots=True)
class CacheEntry:
    body: bytes
    media_type: str = "application/json"
    meta: dict[str, Any] = field(default_factory=dict)

    def dumps(self) -> bytes:
        head = orjson.dumps({"media_type": self.media_type, "meta": self.meta})
        return _MAGIC + struct.pack(">I", len(head)) + head + self.body

    @classmethod
    def loads(cls, raw: bytes) -> CacheEntry | None:
        if len(raw) < 8 or raw[:4] != _MAGIC:
            return None
        (n,) = struct.unpack(">I", raw[4:8])
        head = orjson.loads(raw[8 : 8 + n])
        return cls(body=raw[8 + n :], media_type=head["media_type"], meta=head["meta"])


def _canonical(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    return value


def canonical_json(value: Any) -> bytes:
    return orjson.dumps(_canonical(value), option=orjson.OPT_SORT_KEYS)


def chat_is_deterministic(temperature: float | None, seed: int | None) -> bool:
    return seed is not None or (temperature is not None and temperature == 0)


class MemoryBackend:
    """LRU with TTL, bounded by entry count and total bytes."""

    def __init__(self, max_entries: int, max_total_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_total_bytes = max_total_bytes
        self._data: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._bytes = 0

    async def get(self, key: str) -> bytes | None:
        item = self._data.get(key)
        if item is None:
            return None
        if item[0] <= time.monotonic():
            self._drop(key)
            return None
        self._data.move_to_end(key)
        return item[1]

    async def set(self, key: str, value: bytes, ttl_s: int) -> None:
        self._drop(key)
        self._data[key] = (time.monotonic() + ttl_s, value)
        self._bytes += len(value)
        while self._data and (len(self._data) > self.max_entries or self._bytes > self.max_total_bytes):
            self._drop(next(iter(self._data)))

    async def delete(self, key: str) -> None:
        self._drop(key)

    def _drop(self, key: str) -> None:
        item = self._data.pop(key, None)
        if item is not None:
            self._bytes -= len(item[1])


class RedisBackend:
    def __init__(self, redis: Any) -> None:
        self.redis = redis

    async def get(self, key: str) -> bytes | None:
        return await self.redis.get(key)

    async def set(self, key: str, value: bytes, ttl_s: int) -> None:
        await self.redis.set(key, value, ex=ttl_s)

    async def delete(self, key: str) -> None:
        await self.redis.delete(key)


@dataclass(slots=True)
class CachePlan:
    """What to do with the cache for one request. ``status`` goes to ``ctx.cache``."""

    cache: ResponseCache | None
    key: str | None
    lookup: bool
    store: bool
    ctx: Any = None

    @property
    def status(self) -> str:
        return "bypass" if not (self.lookup or self.store) else "miss"

    async def get(self) -> CacheEntry | None:
        if not self.lookup or self.cache is None or self.key is None:
            return None
        entry = await self.cache.get(self.key)
        if entry is not None and self.ctx is not None:
            self.ctx.cache = "hit"
        return entry

    async def put(self, entry: CacheEntry) -> bool:
        if not self.store or self.cache is None or self.key is None:
            return False
        return await self.cache.put(self.key, entry)


class ResponseCache:
    def __init__(self, config: Any, redis: Any = None, *, prefix: str = "tg:cache") -> None:
        self.config = config
        self.prefix = prefix
        self._pending: set[asyncio.Task[bool]] = set()
        self.backend: Any = (
            RedisBackend(redis)
            if redis is not None
            else MemoryBackend(config.max_entries, config.max_total_bytes)
        )

    def key(self, tenant: str, kind: str, params: Mapping[str, Any]) -> str:
        digest = hashlib.sha256(
            canonical_json({"tenant": tenant, "kind": kind, "params": params})
        ).hexdigest()
        return f"{self.prefix}:{tenant}:{kind}:{digest}"

    def plan(
        self,
        headers: Mapping[str, str],
        ctx: Any,
        tenant: str,
        kind: str,
        params: Mapping[str, Any],
        *,
        deterministic: bool = True,
    ) -> CachePlan:
        """Decides lookup/store from the request headers; sets ``ctx.cache`` to miss or bypass."""
        directives = {d.strip().lower() for d in (headers.get("cache-control") or "").split(",")}
        mode = (headers.get("x-talkgate-cache") or "").strip().lower()
        usable = self.config.enabled and mode != "off" and "no-store" not in directives
        usable = usable and (deterministic or mode == "force")
        plan = CachePlan(
            self,
            self.key(tenant, kind, params) if usable else None,
            lookup=usable and "no-cache" not in directives,
            store=usable,
            ctx=ctx,
        )
        if ctx is not None:
            ctx.cache = plan.status
        return plan

    async def get(self, key: str) -> CacheEntry | None:
        """A cache failure (Redis down) is a miss, never a failed request."""
        try:
            raw = await self.backend.get(key)
            return CacheEntry.loads(raw) if raw else None
        except Exception as exc:
            log.warning("cache read failed, treating as a miss: %r", exc)
            return None

    async def put(self, key: str, entry: CacheEntry) -> bool:
        raw = entry.dumps()
        if len(raw) > self.config.max_entry_bytes:
            return False
        try:
            await self.backend.set(key, raw, self.config.ttl_s)
        except Exception as exc:
            log.warning("cache write failed: %r", exc)
            return False
        return True

    def put_later(self, plan: CachePlan, entry: CacheEntry) -> None:
        """Stores from synchronous code (e.g. a stream's on-done callback) without blocking it."""
        task = asyncio.get_running_loop().create_task(plan.put(entry))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
