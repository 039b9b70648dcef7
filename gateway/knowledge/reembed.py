"""Re-embedding a store whose vectors are not in the embedding route's preferred space.

Why: a query is compared only with vectors of its own model and dimension (index.py), so after
the operator changes ``routes.embedding`` or ``knowledge.embedding_dimension``, or when the cloud
could not embed while a file was ingested, the store is searched lexically only. This job embeds
every chunk that is not yet in the current space, batch by batch, and records its progress on the
store row (``reembedding`` on the vector store object: status, model, done, total, error). Only
when every chunk is in the new space does it set the store's ``embedding_model`` and bump its
version, so each replica's next search builds a dense index; until then the store stays lexical
(vectors of two spaces are never compared).

The preferred space is that of the route's first configured target (encoders.py): a store that
e5 embedded offline moves to the cloud model once the cloud is back, a dimension change moves a
store to the new dimension, and nothing ever moves into a fallback's space during an outage.

Started by a search that finds such a store (``knowledge.reembed``,
on by default), or by ``POST /admin/knowledge/vector_stores/{id}/reembed``. One job per store per
process; after a failure (the embedding route down) a search does not restart it for
``RETRY_AFTER_S``; while a job runs or backs off, a search spends no query embedding probing for
it. A job interrupted by a restart is simply started again: it picks only the chunks still
outside the space.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from gateway.knowledge.ingestion import EMBED_BATCH

log = logging.getLogger("talkgate.knowledge")

#: A failed job is not restarted by searches before this (the admin endpoint always may).
RETRY_AFTER_S = 60.0


class Reembedder:
    def __init__(self, store: Any, encoders: Any) -> None:
        self.store = store  # gateway.knowledge.chunk_store.ChunkStore
        self.encoders = encoders
        self._jobs: dict[str, asyncio.Task[None]] = {}
        self._failed_at: dict[str, float] = {}

    def running(self, store_id: str) -> bool:
        return store_id in self._jobs

    def accepts(self, store_id: str) -> bool:
        """Whether ``schedule`` would start the store's job now: none runs, and it did not fail
        in the last ``RETRY_AFTER_S``."""
        if store_id in self._jobs or not self.encoders.can_embed:
            return False
        failed = self._failed_at.get(store_id)
        return failed is None or time.monotonic() - failed >= RETRY_AFTER_S

    def schedule(self, store_id: str, *, force: bool = False) -> bool:
        """Starts the store's job unless one runs (or failed lately and not ``force``)."""
        if store_id in self._jobs or not self.encoders.can_embed:
            return False
        if not force and not self.accepts(store_id):
            return False
        task = asyncio.create_task(self._guarded(store_id))
        self._jobs[store_id] = task
        task.add_done_callback(lambda _: self._jobs.pop(store_id, None))
        return True

    async def wait(self) -> None:
        """Until the jobs running now end (tests, shutdown)."""
        await asyncio.gather(*list(self._jobs.values()), return_exceptions=True)

    async def stop(self) -> None:
        for task in list(self._jobs.values()):
            task.cancel()
        await self.wait()

    async def _guarded(self, store_id: str) -> None:
        try:
            if await self.run(store_id):
                self._failed_at.pop(store_id, None)
            else:
                self._failed_at[store_id] = time.monotonic()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # never an unhandled task error: the store says what happened
            log.exception("re-embedding of %s failed", store_id)
            self._failed_at[store_id] = time.monotonic()
            await self.store.set_reembed(store_id, _state("failed", None, 0, 0, type(exc).__name__))

    async def run(self, store_id: str) -> bool:
        """Embeds the store's chunks that are not in the current space; True when all are."""
        rows = await self.store.texts_to_embed(store_id)
        if not rows:
            return True
        probe = await self.encoders.preferred_documents([rows[0][1]])
        if probe is None:
            await self.store.set_reembed(store_id, _state("failed", None, 0, len(rows), UNAVAILABLE))
            return False
        space = probe[0]
        todo = [(chunk_id, text) for chunk_id, text, model in rows if model != space]
        done = 0
        await self.store.set_reembed(store_id, _state("in_progress", space, done, len(todo)))
        log.info("re-embedding %d chunks of %s into %s", len(todo), store_id, space)
        for start in range(0, len(todo), EMBED_BATCH):
            batch = todo[start : start + EMBED_BATCH]
            found = await self.encoders.documents([text for _, text in batch], space=space)
            if found is None or found[0] != space:
                await self.store.set_reembed(store_id, _state("failed", space, done, len(todo), UNAVAILABLE))
                return False
            vectors = [
                (chunk_id, row.astype("float32").tobytes())
                for (chunk_id, _), row in zip(batch, found[1], strict=True)
            ]
            await self.store.set_embeddings(store_id, vectors, space)
            done += len(batch)
            await self.store.set_reembed(store_id, _state("in_progress", space, done, len(todo)))
        # Chunks ingested meanwhile came from the same route, so in this space too (or without
        # vectors if the cloud failed them: the next search starts another pass).
        await self.store.set_reembed(store_id, _state("completed", space, done, len(todo)), model=space)
        return True


UNAVAILABLE = "the embedding route could not embed (see the gateway log); retried by a later search"


def _state(status: str, model: str | None, done: int, total: int, error: str | None = None) -> dict[str, Any]:
    return {"status": status, "model": model, "done": done, "total": total, "error": error}
