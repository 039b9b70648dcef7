"""Tenant-bound rows of the knowledge base (files, stores, their files) and the file blobs.

Every method a route reaches takes the tenant and filters on it first: another tenant's id is
"not found", the same answer as an id that never existed (the RAGFlow IDOR class of bug,
reference rag.md §6.3). Deleting a file or detaching it deletes its chunks in the same
transaction and bumps the store's ``version``, so the next search no longer sees them.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.db.knowledge import KnowledgeChunk, KnowledgeFile, VectorStore, VectorStoreFile
from gateway.knowledge.chunk_store import ChunkStore, bump, now_s

STATUSES = ("in_progress", "completed", "failed", "cancelled")


def new_id(prefix: str) -> str:
    return f"{prefix}{os.urandom(12).hex()}"


class KnowledgeStore(ChunkStore):
    """Files, stores and attachments; chunk rows are ChunkStore's (gateway/knowledge/chunk_store.py)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], blob_dir: Path) -> None:
        super().__init__(sessions)
        self.blob_dir = blob_dir

    # ------------------------------------------------------------------ blobs

    def blob_path(self, tenant: str, file_id: str) -> Path:
        safe = hashlib.sha256(tenant.encode()).hexdigest()[:32]  # tenant names are free text
        return self.blob_dir / safe / file_id

    def read_blob(self, tenant: str, file_id: str) -> bytes:
        return self.blob_path(tenant, file_id).read_bytes()

    # ------------------------------------------------------------------ files

    async def create_file(self, tenant: str, filename: str, purpose: str, data: bytes) -> KnowledgeFile:
        """Bytes first (atomically renamed into place), then the row: a row never lacks its blob."""
        row = KnowledgeFile(
            id=new_id("file-"),
            tenant_id=tenant,
            filename=filename,
            purpose=purpose,
            bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            created_at=now_s(),
        )
        path = self.blob_path(tenant, row.id)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".part")
        tmp.write_bytes(data)
        tmp.replace(path)
        async with self.sessions() as s, s.begin():
            s.add(row)
        return row

    async def get_file(self, tenant: str, file_id: str) -> KnowledgeFile | None:
        async with self.sessions() as s:
            row = await s.get(KnowledgeFile, file_id)
        return row if row is not None and row.tenant_id == tenant else None

    async def list_files(self, tenant: str, purpose: str | None = None) -> Sequence[KnowledgeFile]:
        query = select(KnowledgeFile).where(KnowledgeFile.tenant_id == tenant)
        if purpose:
            query = query.where(KnowledgeFile.purpose == purpose)
        async with self.sessions() as s:
            return (await s.scalars(query.order_by(KnowledgeFile.created_at.desc()))).all()

    async def delete_file(self, tenant: str, file_id: str) -> bool:
        """The file, its chunks in every store, its attachments; then its blob."""
        async with self.sessions() as s, s.begin():
            row = await s.get(KnowledgeFile, file_id)
            if row is None or row.tenant_id != tenant:
                return False
            stores = (
                await s.scalars(
                    select(VectorStoreFile.store_id).where(
                        VectorStoreFile.tenant_id == tenant, VectorStoreFile.file_id == file_id
                    )
                )
            ).all()
            await s.execute(delete(KnowledgeChunk).where(KnowledgeChunk.file_id == file_id))
            await s.execute(delete(VectorStoreFile).where(VectorStoreFile.file_id == file_id))
            await bump(s, stores)
            await s.delete(row)
        self.blob_path(tenant, file_id).unlink(missing_ok=True)
        return True

    async def tenant_bytes(self, tenant: str) -> int:
        async with self.sessions() as s:
            total = await s.scalar(
                select(func.coalesce(func.sum(KnowledgeFile.bytes), 0)).where(
                    KnowledgeFile.tenant_id == tenant
                )
            )
        return int(total or 0)

    # ------------------------------------------------------------------ stores

    async def create_store(self, tenant: str, **fields: Any) -> VectorStore:
        now = now_s()
        row = VectorStore(
            id=new_id("vs_"),
            tenant_id=tenant,
            name=fields.get("name") or "",
            description=fields.get("description"),
            meta=fields.get("metadata") or {},
            expires_after=fields.get("expires_after"),
            created_at=now,
            last_active_at=now,
            version=0,
        )
        async with self.sessions() as s, s.begin():
            s.add(row)
        return row

    async def get_store(self, tenant: str, store_id: str) -> VectorStore | None:
        async with self.sessions() as s:
            row = await s.get(VectorStore, store_id)
        return row if row is not None and row.tenant_id == tenant else None

    async def list_stores(self, tenant: str) -> Sequence[VectorStore]:
        async with self.sessions() as s:
            query = select(VectorStore).where(VectorStore.tenant_id == tenant)
            return (await s.scalars(query.order_by(VectorStore.created_at.desc()))).all()

    async def update_store(self, tenant: str, store_id: str, **fields: Any) -> VectorStore | None:
        async with self.sessions() as s, s.begin():
            row = await s.get(VectorStore, store_id)
            if row is None or row.tenant_id != tenant:
                return None
            for name, column in (("name", "name"), ("metadata", "meta"), ("expires_after", "expires_after")):
                if name in fields:
                    setattr(row, column, fields[name])
            row.last_active_at = now_s()
        return row

    async def delete_store(self, tenant: str, store_id: str) -> bool:
        async with self.sessions() as s, s.begin():
            row = await s.get(VectorStore, store_id)
            if row is None or row.tenant_id != tenant:
                return False
            await s.execute(delete(KnowledgeChunk).where(KnowledgeChunk.store_id == store_id))
            await s.execute(delete(VectorStoreFile).where(VectorStoreFile.store_id == store_id))
            await s.delete(row)
        return True

    async def file_counts(self, store_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        counts = {sid: dict.fromkeys((*STATUSES, "total"), 0) for sid in store_ids}
        if not store_ids:
            return counts
        async with self.sessions() as s:
            query = (
                select(VectorStoreFile.store_id, VectorStoreFile.status, func.count())
                .where(VectorStoreFile.store_id.in_(list(store_ids)))
                .group_by(VectorStoreFile.store_id, VectorStoreFile.status)
            )
            for store_id, status, n in (await s.execute(query)).all():
                counts[store_id][status] = n
                counts[store_id]["total"] += n
        return counts

    async def usage_bytes(self, store_ids: Sequence[str]) -> dict[str, int]:
        if not store_ids:
            return {}
        async with self.sessions() as s:
            query = (
                select(VectorStoreFile.store_id, func.coalesce(func.sum(VectorStoreFile.usage_bytes), 0))
                .where(VectorStoreFile.store_id.in_(list(store_ids)))
                .group_by(VectorStoreFile.store_id)
            )
            return {sid: int(n) for sid, n in (await s.execute(query)).all()}

    # ------------------------------------------------------------------ store files

    async def attach(
        self, tenant: str, store_id: str, file_id: str, attributes: dict[str, Any], chunking: dict[str, Any]
    ) -> VectorStoreFile:
        """Attach (or re-attach: re-ingest) a file; the new generation supersedes any running one."""
        async with self.sessions() as s, s.begin():
            row = await s.get(VectorStoreFile, (store_id, file_id))
            if row is None:
                row = VectorStoreFile(
                    store_id=store_id,
                    file_id=file_id,
                    tenant_id=tenant,
                    created_at=now_s(),
                    generation=0,
                    usage_bytes=0,
                    chunk_count=0,
                    pages=0,
                )
                s.add(row)
            row.status, row.last_error = "in_progress", None
            row.attributes, row.chunking = attributes, chunking
            row.generation = (row.generation or 0) + 1
            await s.execute(
                update(VectorStore).where(VectorStore.id == store_id).values(last_active_at=now_s())
            )
        return row

    async def get_store_file(self, tenant: str, store_id: str, file_id: str) -> VectorStoreFile | None:
        async with self.sessions() as s:
            row = await s.get(VectorStoreFile, (store_id, file_id))
        return row if row is not None and row.tenant_id == tenant else None

    async def list_store_files(self, tenant: str, store_id: str, status: str | None = None) -> Sequence[Any]:
        query = (
            select(VectorStoreFile, KnowledgeFile.filename)
            .join(KnowledgeFile, KnowledgeFile.id == VectorStoreFile.file_id)
            .where(VectorStoreFile.tenant_id == tenant, VectorStoreFile.store_id == store_id)
        )
        if status:
            query = query.where(VectorStoreFile.status == status)
        async with self.sessions() as s:
            return (await s.execute(query.order_by(VectorStoreFile.created_at.desc()))).all()

    async def update_attributes(
        self, tenant: str, store_id: str, file_id: str, attributes: dict[str, Any]
    ) -> VectorStoreFile | None:
        async with self.sessions() as s, s.begin():
            row = await s.get(VectorStoreFile, (store_id, file_id))
            if row is None or row.tenant_id != tenant:
                return None
            row.attributes = attributes
            await bump(s, [store_id])
        return row

    async def detach(self, tenant: str, store_id: str, file_id: str) -> bool:
        async with self.sessions() as s, s.begin():
            row = await s.get(VectorStoreFile, (store_id, file_id))
            if row is None or row.tenant_id != tenant:
                return False
            await s.execute(
                delete(KnowledgeChunk).where(
                    KnowledgeChunk.store_id == store_id, KnowledgeChunk.file_id == file_id
                )
            )
            await s.delete(row)
            await bump(s, [store_id])
        return True
