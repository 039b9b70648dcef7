"""Ingestion off the request path: parse → chunk → tokenise → embed → swap chunks in.

Attaching a file to a store only writes an ``in_progress`` row and queues a job; a background
worker does the rest and ends the row ``completed`` or ``failed`` with OpenAI's ``last_error``
(``invalid_file``/``unsupported_file`` for the document, ``server_error`` for us). Rows still in
progress at start-up are queued again, so an ingestion survives a restart.

Parsing, chunking and jieba run in a worker thread (CPU-bound; the event loop keeps serving).
Embedding goes through the router, pinned to the space the store's vectors already are (and,
within a file, to its first batch's; a new store's first space is claimed atomically, so two
first files ingested at once share it): a store is never half one model, half another. If that
model cannot embed, the chunks are stored without vectors and the store is searched lexically
until re-embedding (reembed.py) embeds them, never half-dense.
A job whose generation was superseded (the file was re-attached meanwhile) writes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import anyio

from gateway.knowledge.chunk_store import NewChunk
from gateway.knowledge.chunking import Chunk, chunk_sections
from gateway.knowledge.encoders import Encoders
from gateway.knowledge.lexical import tokenize
from gateway.knowledge.sections import Limits, ParseError
from gateway.knowledge.store import KnowledgeStore

log = logging.getLogger("talkgate.knowledge")

#: Texts per embedding call through the router: Bailian's own batch size, so that one call is one
#: upstream request (retried alone) and, on the local e5 model, a few seconds of CPU that stay
#: far inside deadlines.embedding (100 chunks of 400 tokens took minutes on 2 busy cores).
EMBED_BATCH = 10


@dataclass(frozen=True, slots=True)
class Job:
    tenant: str
    store_id: str
    file_id: str
    generation: int
    chunking: dict[str, Any]

    def sizes(self, config: Any) -> tuple[int, int]:
        """(max tokens, overlap) from an OpenAI ``static`` strategy, else the configured default."""
        static = self.chunking.get("static") if self.chunking.get("type") == "static" else None
        if isinstance(static, dict):
            return int(static["max_chunk_size_tokens"]), int(static["chunk_overlap_tokens"])
        return config.chunk_tokens, config.chunk_overlap


@dataclass(slots=True)
class Prepared:
    chunks: list[Chunk]
    terms: list[str]
    pages: int


def prepare(data: bytes, filename: str, limits: Limits, tokens: int, overlap: int) -> Prepared:
    """The CPU-bound part (runs in a thread). Raises ParseError."""
    from gateway.knowledge.parsers import parse

    sections = parse(data, filename, limits)
    chunks = chunk_sections(sections, tokens, overlap)
    terms = [" ".join(tokenize(c.indexed_text())) for c in chunks]
    pages = len({s.page for s in sections if s.page is not None}) or 1
    return Prepared(chunks, terms, pages)


class Ingestor:
    def __init__(self, store: KnowledgeStore, encoders: Encoders, config: Any, observer: Any = None) -> None:
        self.store = store
        self.encoders = encoders
        self.config = config
        self.observer = observer  # gateway/knowledge/metrics.py KnowledgeMetrics, or None
        self.limits = Limits(
            config.max_pages, config.max_unzipped_bytes, config.max_zip_ratio, config.max_text_chars
        )
        self._queue: asyncio.Queue[Job] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._busy = 0

    async def start(self) -> None:
        for _ in range(max(1, self.config.workers)):
            self._tasks.append(asyncio.create_task(self._worker()))
        try:
            pending = await self.store.pending()
        except Exception:  # e.g. saas.migrate_on_start off and the tables not created yet
            log.exception("could not re-queue unfinished ingestions (are the migrations applied?)")
            return
        for row in pending:
            self.submit(Job(row.tenant_id, row.store_id, row.file_id, row.generation, row.chunking or {}))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._tasks.clear()

    def submit(self, job: Job) -> None:
        self._queue.put_nowait(job)

    @property
    def idle(self) -> bool:
        return self._queue.empty() and self._busy == 0

    async def _worker(self) -> None:
        while True:
            job = await self._queue.get()
            self._busy += 1
            try:
                await self.run(job)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never let one file stop the worker
                log.exception("ingestion of %s into %s failed", job.file_id, job.store_id)
                await self._fail(job, "server_error", f"ingestion failed: {type(exc).__name__}")
            finally:
                self._busy -= 1

    async def _fail(self, job: Job, code: str, message: str) -> None:
        failed = await self.store.fail(job.store_id, job.file_id, job.generation, code, message)
        if failed and self.observer is not None:
            self.observer.ingestion_failed(job.tenant, code)

    async def run(self, job: Job) -> None:
        started = time.perf_counter()
        file = await self.store.get_file(job.tenant, job.file_id)
        if file is None:
            await self._fail(job, "invalid_file", "the file was deleted before it could be ingested")
            return
        try:
            data = await anyio.to_thread.run_sync(self.store.read_blob, job.tenant, job.file_id)
        except OSError as exc:
            await self._fail(job, "server_error", f"the stored file cannot be read: {exc.strerror}")
            return
        tokens, overlap = job.sizes(self.config)
        try:
            prepared = await anyio.to_thread.run_sync(
                prepare, data, file.filename, self.limits, tokens, overlap
            )
        except ParseError as exc:
            await self._fail(job, exc.code, exc.message)
            return
        store = await self.store.get_store(job.tenant, job.store_id)
        pinned = store.embedding_model if store is not None else None
        texts = [c.indexed_text() for c in prepared.chunks]
        space, vectors = await self._embed(texts, pinned)
        if pinned is None and space is not None:  # the store's first vectors: claim its space
            owner = await self.store.claim_embedding_model(job.store_id, space)
            if owner != space:  # another file got there first, in another space: use that one
                space, vectors = await self._embed(texts, owner) if owner else (None, None)
        rows = [
            NewChunk(
                ordinal=i,
                heading=c.heading_text,
                page=c.page,
                text=c.text,
                terms=prepared.terms[i],
                n_tokens=c.n_tokens,
                embedding=vectors[i] if vectors is not None else None,
            )
            for i, c in enumerate(prepared.chunks)
        ]
        done = await self.store.replace_chunks(
            job.store_id, job.file_id, job.generation, rows, space, prepared.pages
        )
        if done and self.observer is not None:
            self.observer.ingested(job.tenant, prepared.pages, len(rows), time.perf_counter() - started)

    async def _embed(self, texts: list[str], space: str | None) -> tuple[str | None, list[bytes] | None]:
        """(space, one float32 blob per text), or (None, None) if any batch could not be embedded
        in ``space`` (None: the route's choice for the first batch, then that one)."""
        if not self.encoders.can_embed:
            return None, None
        blobs: list[bytes] = []
        for start in range(0, len(texts), EMBED_BATCH):
            found = await self.encoders.documents(texts[start : start + EMBED_BATCH], space)
            if found is None or (space is not None and found[0] != space):
                return None, None
            space = found[0]
            blobs += [row.astype("float32").tobytes() for row in found[1]]
        return space, blobs
