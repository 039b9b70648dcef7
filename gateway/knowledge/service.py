"""The knowledge base as one service: what routes, chat and the turn pipeline call.

It composes the store (rows and blobs), the ingestion queue, the per-store indexes and the
searcher, and owns the rules that span them: the per-tenant storage quota, ownership of every id
(``NotFound`` for another tenant's), and that attaching a file queues its ingestion.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.knowledge.batches import BatchStore
from gateway.knowledge.encoders import Encoders
from gateway.knowledge.index import IndexCache
from gateway.knowledge.ingestion import Ingestor, Job
from gateway.knowledge.metrics import KnowledgeMetrics
from gateway.knowledge.reembed import Reembedder
from gateway.knowledge.search import Searcher, SearchResult, StoreNotFound
from gateway.knowledge.store import KnowledgeStore


class NotFound(LookupError):
    """``kind`` ("file", "vector_store", "vector_store.file") ``id`` is not the caller's."""

    def __init__(self, kind: str, item_id: str) -> None:
        super().__init__(f"{kind} {item_id}")
        self.kind, self.item_id = kind, item_id


@dataclass(frozen=True, slots=True)
class QuotaExceeded(Exception):
    used: int
    limit: int
    size: int


class KnowledgeService:
    def __init__(
        self, sessions: Any, data_dir: Path, router: Any, registry: Any, config: Any, metrics: Any = None
    ) -> None:
        self.config = config
        self.store = KnowledgeStore(sessions, data_dir / "knowledge")
        self.batches = BatchStore(sessions)
        self.encoders = Encoders(router, registry, config)
        self.indexes = IndexCache(self.store, config.index_cache_chunks, config)
        self.metrics = KnowledgeMetrics(metrics.registry) if metrics is not None else None
        self.reembedder = Reembedder(self.store, self.encoders)
        self.searcher = Searcher(
            self.store,
            self.indexes,
            self.encoders,
            config,
            self.reembedder if config.reembed else None,
        )
        self.ingestor = Ingestor(self.store, self.encoders, config, self)

    async def start(self) -> None:
        await self.ingestor.start()

    async def stop(self) -> None:
        await self.ingestor.stop()
        await self.reembedder.stop()

    async def reembed(self, store_id: str) -> Any:
        """Admin: (re)starts re-embedding a store of any tenant; returns its row. NotFound if none."""
        row = await self.store.store_row(store_id)
        if row is None:
            raise NotFound("vector_store", store_id)
        self.reembedder.schedule(store_id, force=True)
        return row

    # ------------------------------------------------------------------ observer (ingestor → metrics)

    def ingested(self, tenant: str, pages: int, chunks: int, seconds: float) -> None:
        if self.metrics is not None:
            self.metrics.ingested(tenant, pages, chunks, seconds)

    def ingestion_failed(self, tenant: str, code: str) -> None:
        if self.metrics is not None:
            self.metrics.ingestion_failed(tenant, code)

    async def refresh_storage_metrics(self) -> list[dict[str, Any]]:
        stats = await self.store.tenant_stats()
        if self.metrics is not None:
            self.metrics.storage(stats)
        return stats

    # ------------------------------------------------------------------ files

    def quota_for(self, tenant: str) -> int | None:
        return self.config.tenant_quota_overrides.get(tenant, self.config.tenant_quota_bytes)

    async def upload(self, tenant: str, filename: str, purpose: str, data: bytes) -> Any:
        limit = self.quota_for(tenant)
        if limit is not None:
            used = await self.store.tenant_bytes(tenant)
            if used + len(data) > limit:
                raise QuotaExceeded(used, limit, len(data))
        row = await self.store.create_file(tenant, filename, purpose, data)
        await self.refresh_storage_metrics()
        return row

    async def file(self, tenant: str, file_id: str) -> Any:
        row = await self.store.get_file(tenant, file_id)
        if row is None:
            raise NotFound("file", file_id)
        return row

    async def delete_file(self, tenant: str, file_id: str) -> None:
        if not await self.store.delete_file(tenant, file_id):
            raise NotFound("file", file_id)
        await self.refresh_storage_metrics()

    # ------------------------------------------------------------------ stores

    async def vector_store(self, tenant: str, store_id: str) -> Any:
        row = await self.store.get_store(tenant, store_id)
        if row is None:
            raise NotFound("vector_store", store_id)
        return row

    async def create_store(
        self, tenant: str, file_ids: list[str], chunking: dict[str, Any], **fields: Any
    ) -> Any:
        for file_id in file_ids:  # all or nothing: check every id before creating anything
            await self.file(tenant, file_id)
        row = await self.store.create_store(tenant, **fields)
        for file_id in file_ids:
            await self.attach(tenant, row.id, file_id, {}, chunking)
        return row

    async def delete_store(self, tenant: str, store_id: str) -> None:
        if not await self.store.delete_store(tenant, store_id):
            raise NotFound("vector_store", store_id)
        self.indexes.drop(store_id)

    async def attach(
        self, tenant: str, store_id: str, file_id: str, attributes: dict[str, Any], chunking: dict[str, Any]
    ) -> Any:
        await self.vector_store(tenant, store_id)
        await self.file(tenant, file_id)
        row = await self.store.attach(tenant, store_id, file_id, attributes, chunking)
        self.ingestor.submit(Job(tenant, store_id, file_id, row.generation, chunking))
        return row

    async def store_file(self, tenant: str, store_id: str, file_id: str) -> Any:
        await self.vector_store(tenant, store_id)
        row = await self.store.get_store_file(tenant, store_id, file_id)
        if row is None:
            raise NotFound("vector_store.file", file_id)
        return row

    async def detach(self, tenant: str, store_id: str, file_id: str) -> None:
        await self.vector_store(tenant, store_id)
        if not await self.store.detach(tenant, store_id, file_id):
            raise NotFound("vector_store.file", file_id)

    async def create_batch(
        self, tenant: str, store_id: str, files: list[tuple[str, dict[str, Any]]], chunking: dict[str, Any]
    ) -> Any:
        """Attach several files at once (all ids checked first); returns the batch row."""
        await self.vector_store(tenant, store_id)
        for file_id, _ in files:
            await self.file(tenant, file_id)
        for file_id, attributes in files:
            await self.attach(tenant, store_id, file_id, attributes, chunking)
        return await self.batches.create(tenant, store_id, [f for f, _ in files])

    async def batch(self, tenant: str, store_id: str, batch_id: str) -> Any:
        await self.vector_store(tenant, store_id)
        row = await self.batches.get(tenant, store_id, batch_id)
        if row is None:
            raise NotFound("vector_store.file_batch", batch_id)
        return row

    # ------------------------------------------------------------------ search

    async def search(self, tenant: str, store_ids: list[str], query: str, **options: Any) -> SearchResult:
        """Raises NotFound for a store that is not the tenant's; see Searcher.search for options."""
        try:
            result = await self.searcher.search(tenant, store_ids, query, **options)
        except StoreNotFound as exc:
            raise NotFound("vector_store", exc.store_id) from None
        if self.metrics is not None:
            self.metrics.searched(tenant, result.mode, result.seconds, len(result.hits))
        return result
