"""File batches: several files attached to a store in one call, polled as one object.

A batch stores only its file ids; its status and counts are derived from those files' rows in the
store, so it can never disagree with them. Cancelling marks the files still in progress
``cancelled`` (their running ingestion then writes nothing: its generation check fails).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update

from gateway.db.knowledge import FileBatch, VectorStoreFile
from gateway.knowledge.chunk_store import now_s
from gateway.knowledge.store import STATUSES, new_id


class BatchStore:
    def __init__(self, sessions: Any) -> None:
        self.sessions = sessions

    async def create(self, tenant: str, store_id: str, file_ids: list[str]) -> FileBatch:
        row = FileBatch(
            id=new_id("vsfb_"),
            tenant_id=tenant,
            store_id=store_id,
            file_ids=file_ids,
            cancelled=0,
            created_at=now_s(),
        )
        async with self.sessions() as s, s.begin():
            s.add(row)
        return row

    async def get(self, tenant: str, store_id: str, batch_id: str) -> FileBatch | None:
        async with self.sessions() as s:
            row = await s.get(FileBatch, batch_id)
        return row if row is not None and row.tenant_id == tenant and row.store_id == store_id else None

    async def files(self, batch: FileBatch) -> list[VectorStoreFile]:
        async with self.sessions() as s:
            query = select(VectorStoreFile).where(
                VectorStoreFile.store_id == batch.store_id, VectorStoreFile.file_id.in_(list(batch.file_ids))
            )
            return list((await s.scalars(query)).all())

    async def cancel(self, batch: FileBatch) -> None:
        async with self.sessions() as s, s.begin():
            await s.execute(
                update(VectorStoreFile)
                .where(
                    VectorStoreFile.store_id == batch.store_id,
                    VectorStoreFile.file_id.in_(list(batch.file_ids)),
                    VectorStoreFile.status == "in_progress",
                )
                .values(status="cancelled", generation=VectorStoreFile.generation + 1)
            )
            await s.execute(update(FileBatch).where(FileBatch.id == batch.id).values(cancelled=1))


def batch_object(batch: FileBatch, files: list[VectorStoreFile]) -> dict[str, Any]:
    counts = dict.fromkeys(STATUSES, 0)
    for row in files:
        counts[row.status] = counts.get(row.status, 0) + 1
    if counts["in_progress"]:
        status = "cancelling" if batch.cancelled else "in_progress"
    elif batch.cancelled:
        status = "cancelled"
    else:
        status = "failed" if counts["failed"] == len(files) and files else "completed"
    return {
        "id": batch.id,
        "object": "vector_store.files_batch",
        "created_at": batch.created_at,
        "vector_store_id": batch.store_id,
        "status": status,
        "file_counts": {**counts, "total": len(files)},
    }
