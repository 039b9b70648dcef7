"""A new store's first vector space is claimed once (gateway/knowledge/ingestion.py): two files
ingested at once into an empty store, whose embedding route answered them from two models (the
cloud for one, the local fallback for the other), still end in one space."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
from sqlalchemy import select

from gateway.db import create_engine, run_migrations, session_factory
from gateway.db.knowledge import KnowledgeChunk
from gateway.knowledge.config import KnowledgeConfig
from gateway.knowledge.ingestion import Ingestor, Job
from gateway.knowledge.store import KnowledgeStore
from tests.gateway.saas_support import database_url  # noqa: F401

TEXT = b"Our store opens at nine and closes at five. Returns are accepted for thirty days. " * 30


class TwoModels:
    """Embeds each file's first (unpinned) batch with the next model of ``models``, and holds
    both until both have been embedded: the race is made certain, not left to timing."""

    can_embed = True

    def __init__(self, models: list[str]) -> None:
        self.models = iter(models)
        self.unpinned = 0
        self.both = asyncio.Event()
        self.pinned: list[str] = []

    async def documents(self, texts: list[str], space: str | None = None) -> tuple[str, np.ndarray]:
        if space is None:
            space = next(self.models)
            self.unpinned += 1
            if self.unpinned == 2:
                self.both.set()
            await asyncio.wait_for(self.both.wait(), 10)
        else:
            self.pinned.append(space)
        return space, np.ones((len(texts), 4), np.float32)


async def test_two_first_files_of_a_new_store_share_one_space(database_url: str, tmp_path: Path) -> None:  # noqa: F811
    engine = create_engine(database_url)
    await run_migrations(engine)
    store = KnowledgeStore(session_factory(engine), tmp_path / "blobs")
    try:
        vs = await store.create_store("acme", name="kb")
        jobs = []
        for name in ("a.txt", "b.txt"):
            file = await store.create_file("acme", name, "assistants", TEXT)
            row = await store.attach("acme", vs.id, file.id, {}, {})
            jobs.append(Job("acme", vs.id, file.id, row.generation, {}))
        encoders = TwoModels(["text-embedding-v4/512", "e5-small"])
        ingestor = Ingestor(store, encoders, KnowledgeConfig(chunk_tokens=100, chunk_overlap=0))  # type: ignore[arg-type]
        await asyncio.gather(*(ingestor.run(job) for job in jobs))

        async with store.sessions() as s:
            chunks = (
                await s.execute(
                    select(KnowledgeChunk.file_id, KnowledgeChunk.embedding_model).where(
                        KnowledgeChunk.store_id == vs.id
                    )
                )
            ).all()
        space = (await store.get_store("acme", vs.id)).embedding_model  # type: ignore[union-attr]
        assert {f for f, _ in chunks} == {job.file_id for job in jobs}  # both files were ingested
        assert {m for _, m in chunks} == {space}, chunks  # every vector in the store's one space
        assert space in ("text-embedding-v4/512", "e5-small")
        assert set(encoders.pinned) == {space}  # the other file was embedded again, in that space
    finally:
        await engine.dispose()
