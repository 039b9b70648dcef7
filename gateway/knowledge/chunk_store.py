"""Chunk rows of the knowledge base: the ingestion's writes and the search indexes' reads.

``replace_chunks`` swaps a file's chunks in one transaction, only if the ingestion that produced
them is still the file's current ``generation``; it also drops the chunks of an older file of the
same name in that store (a re-uploaded manual replaces the old one: no stale answers). Every
change of a store's chunks bumps the store's ``version`` (``bump``), which indexes compare against.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.db.knowledge import KnowledgeChunk, KnowledgeFile, VectorStore, VectorStoreFile


def now_s() -> int:
    return int(time.time())


@dataclass(frozen=True, slots=True)
class NewChunk:
    ordinal: int
    heading: str
    page: int | None
    text: str
    terms: str
    n_tokens: int
    embedding: bytes | None = None


class ChunkStore:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    async def claim_embedding_model(self, store_id: str, model: str) -> str | None:
        """Gives a store that has no vector space yet ``model``'s, atomically, and returns the
        store's space after the claim (another one if another file's ingestion claimed first;
        None if the store is gone). Two first files ingested at once thus share one space."""
        async with self.sessions() as s, s.begin():
            await s.execute(
                update(VectorStore)
                .where(VectorStore.id == store_id, VectorStore.embedding_model.is_(None))
                .values(embedding_model=model)
            )
            return await s.scalar(select(VectorStore.embedding_model).where(VectorStore.id == store_id))

    async def pending(self) -> Sequence[VectorStoreFile]:
        """Attachments still in progress (re-queued at start-up: an ingestion survives a restart)."""
        async with self.sessions() as s:
            return (
                await s.scalars(select(VectorStoreFile).where(VectorStoreFile.status == "in_progress"))
            ).all()

    async def fail(self, store_id: str, file_id: str, generation: int, code: str, message: str) -> bool:
        async with self.sessions() as s, s.begin():
            result = await s.execute(
                update(VectorStoreFile)
                .where(
                    VectorStoreFile.store_id == store_id,
                    VectorStoreFile.file_id == file_id,
                    VectorStoreFile.generation == generation,
                )
                .values(status="failed", last_error={"code": code, "message": message[:1000]})
            )
        return bool(result.rowcount)

    async def replace_chunks(
        self,
        store_id: str,
        file_id: str,
        generation: int,
        chunks: list[NewChunk],
        embedding_model: str | None,
        pages: int,
    ) -> bool:
        """Swap in a file's chunks if ``generation`` is still current; False when superseded."""
        async with self.sessions() as s, s.begin():
            row = await s.get(VectorStoreFile, (store_id, file_id), with_for_update=True)
            if row is None or row.generation != generation or row.status != "in_progress":
                return False
            filename = await s.scalar(select(KnowledgeFile.filename).where(KnowledgeFile.id == file_id))
            older = (
                await s.scalars(
                    select(VectorStoreFile.file_id)
                    .join(KnowledgeFile, KnowledgeFile.id == VectorStoreFile.file_id)
                    .where(
                        VectorStoreFile.store_id == store_id,
                        VectorStoreFile.file_id != file_id,
                        KnowledgeFile.filename == filename,
                    )
                )
            ).all()
            stale = [file_id, *older]
            await s.execute(
                delete(KnowledgeChunk).where(
                    KnowledgeChunk.store_id == store_id, KnowledgeChunk.file_id.in_(stale)
                )
            )
            if older:
                await s.execute(
                    delete(VectorStoreFile).where(
                        VectorStoreFile.store_id == store_id, VectorStoreFile.file_id.in_(older)
                    )
                )
            s.add_all(
                KnowledgeChunk(
                    tenant_id=row.tenant_id,
                    store_id=store_id,
                    file_id=file_id,
                    ordinal=c.ordinal,
                    heading=c.heading,
                    page=c.page,
                    text=c.text,
                    terms=c.terms,
                    n_tokens=c.n_tokens,
                    embedding=c.embedding,
                    embedding_model=embedding_model if c.embedding is not None else None,
                )
                for c in chunks
            )
            row.status, row.last_error = "completed", None
            row.chunk_count, row.pages = len(chunks), pages
            row.usage_bytes = sum(len(c.text.encode()) + len(c.embedding or b"") for c in chunks)
            await bump(s, [store_id])
        return True

    async def store_row(self, store_id: str) -> VectorStore | None:
        """The store whatever its tenant (admin use only)."""
        async with self.sessions() as s:
            return await s.get(VectorStore, store_id)

    async def store_version(self, store_id: str) -> int | None:
        async with self.sessions() as s:
            return await s.scalar(select(VectorStore.version).where(VectorStore.id == store_id))

    async def load_chunks(self, store_id: str) -> list[Any]:
        """Every chunk of a store with what search needs (ordered for a stable index)."""
        query = (
            select(
                KnowledgeChunk.id,
                KnowledgeChunk.file_id,
                KnowledgeChunk.ordinal,
                KnowledgeChunk.heading,
                KnowledgeChunk.page,
                KnowledgeChunk.text,
                KnowledgeChunk.terms,
                KnowledgeChunk.embedding,
                KnowledgeChunk.embedding_model,
            )
            .where(KnowledgeChunk.store_id == store_id)
            .order_by(KnowledgeChunk.id)
        )
        async with self.sessions() as s:
            return list((await s.execute(query)).all())

    async def texts_to_embed(self, store_id: str) -> list[tuple[int, str, str | None]]:
        """(chunk id, the text ingestion embeds, its vector's model or None) of every chunk."""
        query = (
            select(
                KnowledgeChunk.id, KnowledgeChunk.heading, KnowledgeChunk.text, KnowledgeChunk.embedding_model
            )
            .where(KnowledgeChunk.store_id == store_id)
            .order_by(KnowledgeChunk.id)
        )
        async with self.sessions() as s:
            rows = (await s.execute(query)).all()
        return [(i, f"{heading}\n{text}" if heading else text, model) for i, heading, text, model in rows]

    async def set_embeddings(self, store_id: str, vectors: list[tuple[int, bytes]], model: str) -> None:
        """New vectors for existing chunks (a chunk deleted meanwhile is skipped); no version bump:
        the store stays lexical until ``finish_reembed``, never half in one space."""
        async with self.sessions() as s, s.begin():
            for chunk_id, blob in vectors:
                await s.execute(
                    update(KnowledgeChunk)
                    .where(KnowledgeChunk.id == chunk_id, KnowledgeChunk.store_id == store_id)
                    .values(embedding=blob, embedding_model=model)
                )

    async def set_reembed(self, store_id: str, state: dict[str, Any], model: str | None = None) -> None:
        """Records re-embedding progress; with ``model``, also the store's new space (and bumps
        its version, so that every replica rebuilds a dense index)."""
        async with self.sessions() as s, s.begin():
            values: dict[str, Any] = {"reembed": state}
            if model is not None:
                values["embedding_model"] = model
            await s.execute(update(VectorStore).where(VectorStore.id == store_id).values(**values))
            if model is not None:
                await bump(s, [store_id])

    async def store_files_meta(self, store_id: str) -> dict[str, tuple[str, dict[str, Any]]]:
        """file id → (filename, attributes) for a store's completed files."""
        query = (
            select(VectorStoreFile.file_id, KnowledgeFile.filename, VectorStoreFile.attributes)
            .join(KnowledgeFile, KnowledgeFile.id == VectorStoreFile.file_id)
            .where(VectorStoreFile.store_id == store_id)
        )
        async with self.sessions() as s:
            return {fid: (name, attrs or {}) for fid, name, attrs in (await s.execute(query)).all()}

    async def tenant_stats(self) -> list[dict[str, Any]]:
        """Per tenant: files, bytes, stores, chunks, failed ingestions (admin view and metrics)."""
        async with self.sessions() as s:
            files = dict(
                (t, (n, b))
                for t, n, b in (
                    await s.execute(
                        select(
                            KnowledgeFile.tenant_id,
                            func.count(),
                            func.coalesce(func.sum(KnowledgeFile.bytes), 0),
                        ).group_by(KnowledgeFile.tenant_id)
                    )
                ).all()
            )
            stores = dict(
                (
                    await s.execute(
                        select(VectorStore.tenant_id, func.count()).group_by(VectorStore.tenant_id)
                    )
                ).all()
            )
            chunks = dict(
                (
                    await s.execute(
                        select(KnowledgeChunk.tenant_id, func.count()).group_by(KnowledgeChunk.tenant_id)
                    )
                ).all()
            )
            failed = dict(
                (
                    await s.execute(
                        select(VectorStoreFile.tenant_id, func.count())
                        .where(VectorStoreFile.status == "failed")
                        .group_by(VectorStoreFile.tenant_id)
                    )
                ).all()
            )
        tenants = sorted(set(files) | set(stores) | set(chunks))
        return [
            {
                "tenant": t,
                "files": int(files.get(t, (0, 0))[0]),
                "bytes": int(files.get(t, (0, 0))[1]),
                "vector_stores": int(stores.get(t, 0)),
                "chunks": int(chunks.get(t, 0)),
                "failed_files": int(failed.get(t, 0)),
            }
            for t in tenants
        ]


async def bump(session: AsyncSession, store_ids: Sequence[str]) -> None:
    if store_ids:
        await session.execute(
            update(VectorStore)
            .where(VectorStore.id.in_(list(store_ids)))
            .values(version=VectorStore.version + 1, last_active_at=now_s())
        )
