"""The knowledge base's view of the router: embed chunks and queries, rerank candidates.

Both go through ``Router.embed``/``Router.rerank`` (routes ``embedding`` and ``rerank``), so they
get the same retries, circuit breakers, deadlines and fallback chains as chat. Each call runs on a
context of its own (the provider header of a chat answer must name the chat model) whose upstream
time is added to the caller's, so ``x-talkgate-overhead-ms`` stays honest.

When the route cannot be served (no cloud key, breaker open, every target failed) the callers
degrade: ingestion stores chunks without vectors (the store is then searched lexically until
they are re-embedded: reembed.py) and search skips the dense list or the rerank. Nothing here
raises for that.

A ``space`` (``text-embedding-v4/512``, ``e5-small/384``: what a store's vectors are) pins the
call to the target that makes that space, with no fallback to another model: a store embedded by
e5 offline is queried with e5 even once the cloud is back, and a cloud store's next file is never
embedded by e5 during an outage (it gets no vectors instead). Vectors of two spaces never meet.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import numpy as np

from gateway.context import RequestContext
from policies.targets import Target, UnknownModelError
from providers.base import EmbedRequest, ProviderError, RerankRequest, space_name, split_space

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

    def cosine_is_relevance(self, space: str | None) -> bool:
        """Whether a cosine in ``space`` may be reported as a hit's score (grounded chat declines
        below ``answer_min_score``). Not for a local model's: e5 puts unrelated texts at 0.7-0.85
        and related ones at 0.8-0.9, so its cosine ranks well but says nothing absolute; those
        hits keep the lexical score (and the reranker's, when it runs)."""
        if not space:
            return False
        try:
            target = self.router.resolve("embedding", split_space(space)[0])[0]
        except UnknownModelError:
            return False
        return target.provider != "local"

    async def _embed(
        self, texts: list[str], text_type: str, parent: Any | None, space: str | None
    ) -> tuple[str, np.ndarray] | None:
        ctx = _context()
        skip = None
        if space is None:  # a store's first vectors: the route's chain decides
            model, dimension = (
                self.router.resolve("embedding", None)[0].model,
                self.config.embedding_dimension,
            )
        else:
            model, dimension = split_space(space)

            def skip(target: Target) -> str | None:
                return None if target.model == model else f"the store's vectors are {space}"

        request = EmbedRequest(model, texts, text_type, dimension)  # type: ignore[arg-type]
        try:
            result = await self.router.embed(request, ctx, skip=skip)
        except (ProviderError, UnknownModelError) as exc:  # unknown: the space's model left the route
            log.warning("embedding failed (%s); falling back to lexical search", getattr(exc, "message", exc))
            return None
        finally:
            if parent is not None:
                parent.upstream_s += ctx.upstream_s
        if space is not None and result.model != space:
            log.warning("embedding made %s, not the store's %s; searching lexically", result.model, space)
            return None
        return result.model, np.asarray(result.vectors, dtype=np.float32)

    def preferred_target(self) -> Target | None:
        """The route's first target that is configured here (the cloud model with a key, e5 in
        an offline deployment): the only one re-embedding writes into."""
        for target in self.router.resolve("embedding", None):
            if self.registry.get("embedding", target.provider) is not None:
                return target
        return None

    def preferred_space(self) -> str | None:
        """The space of ``preferred_target`` when known without a call (None: not known)."""
        target = self.preferred_target()
        if target is None or not self.config.dense:
            return None
        if target.provider == "local":
            provider = self.registry.get("embedding", "local")
            dimension = getattr(provider, "fixed_dimension", lambda _: None)(target.model)
            return space_name(target.model, dimension) if dimension else None
        return space_name(target.model, self.config.embedding_dimension)

    async def preferred_documents(self, texts: list[str]) -> tuple[str, np.ndarray] | None:
        """``documents`` by the preferred target only (no fallback): re-embedding moves a store
        towards the configured space, never into a fallback's during an outage."""
        space = self.preferred_space()
        if not texts or not self.can_embed or space is None:
            return None
        return await self._embed(texts, "document", None, space)

    async def documents(self, texts: list[str], space: str | None = None) -> tuple[str, np.ndarray] | None:
        """(vector space, one row per text), or None when the embedding route cannot serve;
        ``space``: only that space will do (see the module docstring)."""
        if not texts or not self.can_embed:
            return None
        return await self._embed(texts, "document", None, space)

    async def query(
        self, text: str, parent: Any | None = None, space: str | None = None
    ) -> tuple[str, np.ndarray] | None:
        if not self.can_embed:
            return None
        found = await self._embed([text], "query", parent, space)
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
