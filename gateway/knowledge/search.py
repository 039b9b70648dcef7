"""Hybrid retrieval over one or more of a tenant's stores: BM25 + dense, fused, then reranked.

1. Lexical: jieba tokens of the query against each store's BM25 matrix (always available).
2. Dense: the query embedded through routes.embedding by the model of the store's vectors (one
   space per store, see encoders.py), cosine against them, never two spaces; exact, or for large
   stores projected then exact (gateway/knowledge/dense.py). A store without vectors of one space,
   or in another space than the route's preferred one, is handed to re-embedding (reembed.py).
3. Reciprocal-rank fusion of the two lists (k = 60), across stores.
4. Rerank of the best ``rerank_candidates`` through routes.rerank, when configured.

The reported ``score`` is in [0, 1]: the reranker's relevance when reranked, else the cosine when
the store is dense (and its model's cosine means relevance: not a local model's, see
``Encoders.cosine_is_relevance``), else a saturating map of BM25 (ranking.lexical_score). ``mode`` says which
retrievers actually ran, so a degraded (lexical-only) answer is visible to clients and metrics.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio
import numpy as np

from gateway.knowledge import filters as attribute_filters
from gateway.knowledge.encoders import Encoders
from gateway.knowledge.index import IndexCache, StoreIndex
from gateway.knowledge.lexical import tokenize
from gateway.knowledge.ranking import lexical_score, rrf, top_k
from gateway.knowledge.store import KnowledgeStore

#: Above this many floats read per query (an exact scan of 20k chunks of 512 dimensions, a few
#: milliseconds) the dense scoring runs in a worker thread (numpy releases the GIL), so a large
#: store's search does not stall the event loop; below it the thread hop would cost more.
DENSE_OFFLOAD_FLOATS = 20_000 * 512


class StoreNotFound(LookupError):
    def __init__(self, store_id: str) -> None:
        super().__init__(store_id)
        self.store_id = store_id


@dataclass(frozen=True, slots=True)
class Hit:
    store_id: str
    file_id: str
    filename: str
    chunk_id: int
    ordinal: int
    heading: str
    page: int | None
    text: str
    score: float
    attributes: dict[str, Any]
    support: float = 0.0  # idf-weighted share of the query's words found in the passage


@dataclass(slots=True)
class SearchResult:
    hits: list[Hit]
    mode: str  # "hybrid" | "lexical"
    reranked: bool = False
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Candidate:
    index: StoreIndex
    row: int
    fused: float
    bm25: float
    cosine: float | None


class Reembedding(Protocol):
    """What a search asks of re-embedding (gateway/knowledge/reembed.py's Reembedder)."""

    def accepts(self, store_id: str) -> bool: ...
    def schedule(self, store_id: str) -> bool: ...


class Searcher:
    def __init__(
        self,
        store: KnowledgeStore,
        indexes: IndexCache,
        encoders: Encoders,
        config: Any,
        reembedding: Reembedding | None = None,
    ) -> None:
        self.store = store
        self.indexes = indexes
        self.encoders = encoders
        self.config = config
        #: offered the stores searched outside the preferred space (gateway/knowledge/reembed.py)
        self.reembedding = reembedding

    async def search(
        self,
        tenant: str,
        store_ids: list[str],
        query: str,
        max_results: int = 10,
        filters: dict[str, Any] | None = None,
        score_threshold: float | None = None,
        rerank: bool = True,
        parent: Any | None = None,
    ) -> SearchResult:
        """Raises StoreNotFound for a store id that is not the tenant's (checked before any work)."""
        started = time.perf_counter()
        versions = []
        for store_id in store_ids:
            row = await self.store.get_store(tenant, store_id)
            if row is None:
                raise StoreNotFound(store_id)
            versions.append(row.version)
        found = [await self.indexes.get(s, v) for s, v in zip(store_ids, versions, strict=True)]
        indexes = [i for i in found if i is not None and i.size]
        terms = tokenize(query)
        query_vector: dict[str, np.ndarray] = {}
        for space in dict.fromkeys(i.dense_model for i in indexes if i.dense is not None and i.dense_model):
            embedded = await self.encoders.query(query, parent, space)  # by the store's own model
            if embedded is not None:
                query_vector[space] = embedded[1]
        await self._offer_reembedding(indexes, query, query_vector, parent)
        candidates: list[_Candidate] = []
        dense_used = False
        notes: list[str] = []
        for index in indexes:
            mask = None
            if filters:
                allowed = {
                    f for f, (_, attrs) in index.files.items() if attribute_filters.matches(filters, attrs)
                }
                mask = index.file_mask(allowed)
            bm25 = index.bm25.scores(terms)
            rankings = [top_k(bm25, self.config.candidates, mask)]
            vector = None
            if index.dense is not None:
                vector = query_vector.get(index.dense_model or "")
                if vector is not None:
                    if index.dense.work > DENSE_OFFLOAD_FLOATS:
                        ranked, _ = await anyio.to_thread.run_sync(
                            index.dense.top, vector, self.config.candidates, mask
                        )
                    else:
                        ranked, _ = index.dense.top(vector, self.config.candidates, mask)
                    rankings.append(ranked)
                    dense_used = True
                else:
                    notes.append(
                        f"{index.store_id}: searched lexically (no query vector in {index.dense_model})"
                    )
            fused = rrf(rankings)
            rows = np.asarray([row for row, _ in fused], dtype=np.int64)
            # exact cosines of every fused row (the dense list's and the BM25-only ones alike); a
            # local model's cosine ranks (RRF above) but is not reported as relevance
            relevant = vector is not None and self.encoders.cosine_is_relevance(index.dense_model)
            cosines = index.dense.scores(vector, rows) if index.dense is not None and relevant else None
            for i, (row, score) in enumerate(fused):
                cos = float(cosines[i]) if cosines is not None else None
                candidates.append(_Candidate(index, row, score, float(bm25[row]), cos))
        candidates.sort(key=lambda c: -c.fused)
        hits, reranked = await self._finish(query, terms, candidates, max_results, rerank, parent)
        if score_threshold is not None:
            hits = [h for h in hits if h.score >= score_threshold]
        mode = "hybrid" if dense_used else "lexical"
        return SearchResult(hits, mode, reranked, time.perf_counter() - started, notes)

    async def _offer_reembedding(
        self, indexes: list[StoreIndex], query: str, vectors: dict[str, np.ndarray], parent: Any | None
    ) -> None:
        """Hands re-embedding (reembed.py) the stores without vectors of one space, or in another
        space than the route's preferred one, once the preferred model embeds again: the query
        embedded by it (one call, only while such a store is searched) is the sign."""
        reembedding = self.reembedding
        preferred = self.encoders.preferred_space() if reembedding is not None else None
        if reembedding is None or preferred is None:
            return
        stale = [
            i.store_id
            for i in indexes
            if (i.dense is None or i.dense_model != preferred) and reembedding.accepts(i.store_id)
        ]
        if not stale:
            return  # none, or each is being re-embedded or backing off: no probe
        if preferred not in vectors and await self.encoders.query(query, parent, preferred) is None:
            return  # the preferred model cannot embed now (its breaker makes asking again cheap)
        for store_id in stale:
            reembedding.schedule(store_id)

    async def _finish(
        self,
        query: str,
        terms: list[str],
        candidates: list[_Candidate],
        max_results: int,
        rerank: bool,
        parent: Any | None,
    ) -> tuple[list[Hit], bool]:
        pool = candidates[: max(max_results, self.config.rerank_candidates)]
        scored: list[tuple[_Candidate, float]] = []
        reranked = False
        if rerank and pool:
            texts = [_passage(c.index, c.row) for c in pool]
            ranking = await self.encoders.rerank(query, texts, min(len(texts), max_results), parent)
            if ranking is not None:
                scored = [(pool[i], score) for i, score in ranking]
                reranked = True
        if not reranked:
            scored = [(c, c.cosine if c.cosine is not None else lexical_score(c.bm25)) for c in pool]
        return [_hit(c, score, terms) for c, score in scored[:max_results]], reranked


def _passage(index: StoreIndex, row: int) -> str:
    heading = index.headings[row]
    return f"{heading}\n{index.texts[row]}" if heading else index.texts[row]


def _hit(c: _Candidate, score: float, terms: list[str]) -> Hit:
    index, row = c.index, c.row
    filename, attributes = index.files.get(index.file_ids[row], ("", {}))
    return Hit(
        store_id=index.store_id,
        file_id=index.file_ids[row],
        filename=filename,
        chunk_id=int(index.chunk_ids[row]),
        ordinal=index.ordinals[row],
        heading=index.headings[row],
        page=index.pages[row],
        text=index.texts[row],
        score=round(max(0.0, min(1.0, float(score))), 6),
        attributes=attributes,
        support=round(index.bm25.support(terms, row), 4),
    )
