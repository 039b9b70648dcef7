"""The knowledge base's view of the router: embed chunks and queries, rerank candidates.

Both go through ``Router.embed``/``Router.rerank`` (routes ``embedding`` and ``rerank``), so they
get the same retries, circuit breakers, deadlines and fallback chains as chat. Each call runs on a
context of its own (the provider header of a chat answer must name the chat model) whose upstream
time is added to the caller's, so ``x-talkgate-overhead-ms`` stays honest.

When the route cannot be served (no cloud key, breaker open, every target failed) the callers
degrade: ingestion stores chunks without vectors (the store is then searched lexically until
they are re-embedded: reembed.py) and search skips the dense list or the rerank. Nothing here raises for that.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import numpy as np

from gateway.context import RequestContext
from providers.base import EmbedRequest, ProviderError, RerankRequest

log = logging.getLogger("talkgate.knowledge")


def _context() -> RequestContext:
    return RequestContext(request_id=f"kb-{uuid.uuid4().hex[:16]}")


class Encoders:
    def __init__(self, router: Any, registry: Any, config: Any) -> None:
        self.router = router
        self.registry = registry
        self.config = config

    @property
    def can_embed(self) -> bool:
        return bool(self.config.dense) and any(
            self.registry.get("embedding", t.provider) is not None
            for t in self.router.resolve("embedding", None)
        )

    @property
    def can_rerank(self) -> bool:
        return bool(self.config.rerank) and any(
            self.registry.get("rerank", t.provider) is not None for t in self.router.resolve("rerank", None)
        )

    async def _embed(
        self, texts: list[str], text_type: str, parent: Any | None
    ) -> tuple[str, np.ndarray] | None:
        ctx = _context()
        model = self.router.resolve("embedding", None)[0].model
        request = EmbedRequest(model, texts, text_type, self.config.embedding_dimension)  # type: ignore[arg-type]
        try:
            result = await self.router.embed(request, ctx)
        except ProviderError as exc:
            log.warning("embedding failed (%s); falling back to lexical search", exc.message)
            return None
        finally:
            if parent is not None:
                parent.upstream_s += ctx.upstream_s
        return result.model, np.asarray(result.vectors, dtype=np.float32)

    async def documents(self, texts: list[str]) -> tuple[str, np.ndarray] | None:
        """(vector space, one row per text), or None when the embedding route cannot serve."""
        if not texts or not self.can_embed:
            return None
        return await self._embed(texts, "document", None)

    async def query(self, text: str, parent: Any | None = None) -> tuple[str, np.ndarray] | None:
        if not self.can_embed:
            return None
        found = await self._embed([text], "query", parent)
        return None if found is None else (found[0], found[1][0])

    async def rerank(
        self, query: str, documents: list[str], top_n: int, parent: Any | None = None
    ) -> list[tuple[int, float]] | None:
        """(index into documents, relevance), best first; None when reranking is unavailable."""
        if not documents or not self.can_rerank:
            return None
        ctx = _context()
        request = RerankRequest(model=self.router.resolve("rerank", None)[0].model, query=query,
                                documents=documents, top_n=top_n)  # fmt: skip
        try:
            return (await self.router.rerank(request, ctx)).ranking
        except ProviderError as exc:
            log.warning("rerank failed (%s); keeping the fused order", exc.message)
            return None
        finally:
            if parent is not None:
                parent.upstream_s += ctx.upstream_s
