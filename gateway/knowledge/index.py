"""Per-store in-memory search indexes (BM25 matrix, dense matrix), rebuilt when the store changes.

Why in memory: chunks live in the ordinary database (SQLite or PostgreSQL, no vector extension),
and ranking is numpy/scipy over matrices; reading and building them per query would cost seconds
at 100k chunks. Each store row carries a ``version`` bumped on every change of its chunks, and
every search compares it (one indexed primary-key read) so that all replicas serve fresh chunks:
a re-uploaded or deleted file is out of the next search's results.

Dense vectors are used only when every chunk of the store has a vector of the store's one
embedding model; otherwise the index is lexical only (``dense is None``) and search says so,
rather than compare vectors from two models.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import anyio
import numpy as np

from gateway.knowledge.lexical import BM25Index
from gateway.knowledge.ranking import normalise
from gateway.knowledge.store import KnowledgeStore


@dataclass(slots=True)
class StoreIndex:
    store_id: str
    version: int
    chunk_ids: np.ndarray
    file_ids: list[str]  # per chunk
    ordinals: list[int]
    headings: list[str]
    pages: list[int | None]
    texts: list[str]
    bm25: BM25Index
    dense: np.ndarray | None
    dense_model: str | None
    files: dict[str, tuple[str, dict[str, Any]]]  # file id → (filename, attributes)

    @property
    def size(self) -> int:
        return len(self.texts)

    def file_mask(self, allowed: set[str]) -> np.ndarray:
        return np.fromiter((f in allowed for f in self.file_ids), dtype=bool, count=self.size)


def build_index(
    store_id: str, version: int, rows: list[Any], files: dict[str, tuple[str, dict[str, Any]]]
) -> StoreIndex:
    """Rows from ``KnowledgeStore.load_chunks`` → a ready index (CPU-bound: run in a thread)."""
    models = {r.embedding_model for r in rows}
    dense = None
    dense_model = None
    if rows and len(models) == 1 and None not in models:
        dense_model = next(iter(models))
        matrix = np.stack([np.frombuffer(r.embedding, dtype=np.float32) for r in rows])
        dense = normalise(matrix)
    return StoreIndex(
        store_id=store_id,
        version=version,
        chunk_ids=np.asarray([r.id for r in rows], dtype=np.int64),
        file_ids=[r.file_id for r in rows],
        ordinals=[r.ordinal for r in rows],
        headings=[r.heading for r in rows],
        pages=[r.page for r in rows],
        texts=[r.text for r in rows],
        bm25=BM25Index([r.terms.split() for r in rows]),
        dense=dense,
        dense_model=dense_model,
        files=files,
    )


class IndexCache:
    """Indexes by store id, least recently used evicted beyond ``max_chunks`` chunks in all."""

    def __init__(self, store: KnowledgeStore, max_chunks: int) -> None:
        self.store = store
        self.max_chunks = max_chunks
        self._indexes: OrderedDict[str, StoreIndex] = OrderedDict()
        self._locks: dict[str, asyncio.Lock] = {}
        self.builds = 0  # for tests and metrics: how many times an index was (re)built

    async def get(self, store_id: str, version: int | None = None) -> StoreIndex | None:
        """The store's current index; None if the store no longer exists. ``version``: the
        store row's, when the caller has just read it (saves a database round trip)."""
        if version is None:
            version = await self.store.store_version(store_id)
        if version is None:
            self._indexes.pop(store_id, None)
            return None
        cached = self._indexes.get(store_id)
        if cached is not None and cached.version == version:
            self._indexes.move_to_end(store_id)
            return cached
        lock = self._locks.setdefault(store_id, asyncio.Lock())
        async with lock:
            cached = self._indexes.get(store_id)
            if cached is not None and cached.version >= version:
                return cached
            rows = await self.store.load_chunks(store_id)
            files = await self.store.store_files_meta(store_id)
            index = await anyio.to_thread.run_sync(build_index, store_id, version, rows, files)
            self.builds += 1
            self._indexes[store_id] = index
            self._indexes.move_to_end(store_id)
            self._evict()
            return index

    def drop(self, store_id: str) -> None:
        self._indexes.pop(store_id, None)

    def _evict(self) -> None:
        total = sum(i.size for i in self._indexes.values())
        while total > self.max_chunks and len(self._indexes) > 1:
            _, oldest = self._indexes.popitem(last=False)
            total -= oldest.size
