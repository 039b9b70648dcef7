"""Per-store in-memory search indexes (BM25 matrix, dense matrix), rebuilt when the store changes.

Why in memory: chunks live in the ordinary database (SQLite or PostgreSQL, no vector extension),
and ranking is numpy/scipy over matrices; reading and building them per query would cost seconds
at 100k chunks. Each store row carries a ``version`` bumped on every change of its chunks, and
every search compares it (one indexed primary-key read) so that all replicas serve fresh chunks:
a re-uploaded or deleted file is out of the next search's results.

Dense vectors are used only when every chunk of the store has a vector of the store's one
embedding model; otherwise the index is lexical only (``dense is None``) and search says so,
rather than compare vectors from two models. Large stores get a projected dense index
(gateway/knowledge/dense.py), calibrated while the index is built.

The build is per-column bulk work (one join of the vector blobs, one pass over the terms), not
per-row Python objects: it runs on every change of a store, and a 100k-chunk store is rebuilt
by the first search after each change.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import anyio
import numpy as np

from gateway.knowledge.dense import DenseIndex
from gateway.knowledge.lexical import BM25Index
from gateway.knowledge.ranking import normalise
from gateway.knowledge.store import KnowledgeStore


@dataclass(slots=True)
class StoreIndex:
    store_id: str
    version: int
    chunk_ids: np.ndarray
    file_ids: list[str]  # per chunk
    file_codes: np.ndarray  # per chunk: index into file_names (filters build masks from it)
    file_names: list[str]
    ordinals: list[int]
    headings: list[str]
    pages: list[int | None]
    texts: list[str]
    bm25: BM25Index
    dense: DenseIndex | None
    dense_model: str | None
    files: dict[str, tuple[str, dict[str, Any]]]  # file id → (filename, attributes)

    @property
    def size(self) -> int:
        return len(self.texts)

    def file_mask(self, allowed: set[str]) -> np.ndarray:
        """Per chunk: is its file in ``allowed`` (one lookup per file, not per chunk)."""
        keep = np.fromiter((f in allowed for f in self.file_names), dtype=bool, count=len(self.file_names))
        return keep[self.file_codes]


def build_index(
    store_id: str,
    version: int,
    rows: list[Any],
    files: dict[str, tuple[str, dict[str, Any]]],
    config: Any = None,
    previous: StoreIndex | None = None,
) -> StoreIndex:
    """Rows from ``KnowledgeStore.load_chunks`` → a ready index (CPU-bound: run in a thread).
    ``config``: the KnowledgeConfig (candidates, dense_approx_min_chunks, dense_min_recall);
    ``previous``: the store's index before this change (its dense calibration may be reused)."""
    columns = list(zip(*rows, strict=True)) if rows else [()] * 9
    ids, file_ids, ordinals, headings, pages, texts, terms, embeddings, models = (list(c) for c in columns)
    names: dict[str, int] = {}
    codes = np.fromiter((names.setdefault(f, len(names)) for f in file_ids), dtype=np.int32, count=len(rows))
    return StoreIndex(
        store_id=store_id,
        version=version,
        chunk_ids=np.asarray(ids, dtype=np.int64),
        file_ids=file_ids,
        file_codes=codes,
        file_names=list(names),
        ordinals=ordinals,
        headings=headings,
        pages=pages,
        texts=texts,
        bm25=BM25Index([t.split() for t in terms]),
        dense=_dense(embeddings, set(models), config, previous.dense if previous is not None else None),
        dense_model=models[0] if rows and len(set(models)) == 1 else None,
        files=files,
    )


def _dense(
    blobs: list[bytes | None], models: set[str | None], config: Any, previous: DenseIndex | None
) -> DenseIndex | None:
    """The dense index when every chunk has a vector of one model (of one width), else None."""
    if not blobs or len(models) != 1 or None in models or any(b is None for b in blobs):
        return None
    joined = b"".join(blobs)  # type: ignore[arg-type]
    if len(joined) % (4 * len(blobs)):
        return None  # vectors of different widths under one model name: never compare them
    matrix = normalise(np.frombuffer(joined, dtype=np.float32).reshape(len(blobs), -1))
    del joined
    return DenseIndex.build(
        matrix,
        k=getattr(config, "candidates", 50),
        approx_min_rows=getattr(config, "dense_approx_min_chunks", 20_000),
        min_recall=getattr(config, "dense_min_recall", 0.99),
        previous=previous,
    )


class IndexCache:
    """Indexes by store id, least recently used evicted beyond ``max_chunks`` chunks in all."""

    def __init__(self, store: KnowledgeStore, max_chunks: int, config: Any = None) -> None:
        self.store = store
        self.max_chunks = max_chunks
        self.config = config
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
            index = await anyio.to_thread.run_sync(
                build_index, store_id, version, rows, files, self.config, cached
            )
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
