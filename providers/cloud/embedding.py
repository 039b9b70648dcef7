"""Bailian text embeddings (text-embedding-v4/v3/v2) and text rerank (qwen3-rerank, gte-rerank-v2).

Native endpoints, as the dashscope SDK calls them (reference rag.md §1.1, §1.3): the SDK has no
async embedding class, and the native body carries ``text_type`` (query vs document), which the
OpenAI-compatible endpoint may not. Batches are split here to the documented row limits (10 for
v3/v4, 25 for v1/v2): larger batches are a 400 ("batch size is invalid") that has broken many RAG
tools (reference §1.4). No retries here: the router's retry, breaker and deadline apply per call.
"""

from __future__ import annotations

from providers.base import (
    EmbedRequest,
    EmbedResult,
    ErrorKind,
    ProviderError,
    RerankRequest,
    RerankResult,
    space_name,
)
from providers.cloud.lifecycle import CloudLifecycle

EMBEDDING_PATH = "services/embeddings/text-embedding/text-embedding"
RERANK_PATH = "services/rerank/text-rerank/text-rerank"
#: Texts per call by model family (reference rag.md §1.1 table).
BATCH_ROWS = {"text-embedding-v1": 25, "text-embedding-v2": 25}
DEFAULT_BATCH_ROWS = 10
EMBEDDING_MODELS = ("text-embedding-v4", "text-embedding-v3", "text-embedding-v2")
RERANK_MODELS = ("qwen3-rerank", "gte-rerank-v2")


def batch_rows(model: str) -> int:
    return BATCH_ROWS.get(model, DEFAULT_BATCH_ROWS)


class BailianEmbeddingProvider(CloudLifecycle):
    def models(self) -> list[str]:
        return list(EMBEDDING_MODELS)

    async def embed(self, request: EmbedRequest) -> EmbedResult:
        rows = batch_rows(request.model)
        vectors: list[list[float]] = []
        tokens = 0
        for start in range(0, len(request.texts), rows):
            texts = request.texts[start : start + rows]
            params: dict[str, object] = {"text_type": request.text_type}
            if request.dimension is not None:
                params["dimension"] = request.dimension
            body = {"model": request.model, "input": {"texts": texts}, "parameters": params}
            reply = await self.client.post_json(EMBEDDING_PATH, body)
            items = (reply.get("output") or {}).get("embeddings")
            if not isinstance(items, list) or len(items) != len(texts):
                raise ProviderError(
                    ErrorKind.RETRYABLE, "DashScope embedding reply has the wrong number of rows"
                )
            ordered = sorted(items, key=lambda item: int(item.get("text_index", 0)))
            vectors += [list(item["embedding"]) for item in ordered]
            tokens += int((reply.get("usage") or {}).get("total_tokens", 0))
        dimension = len(vectors[0]) if vectors else (request.dimension or 0)
        return EmbedResult(vectors, space_name(request.model, dimension), tokens)


class BailianRerankProvider(CloudLifecycle):
    def models(self) -> list[str]:
        return list(RERANK_MODELS)

    async def rerank(self, request: RerankRequest) -> RerankResult:
        params: dict[str, object] = {"return_documents": False}
        if request.top_n is not None:
            params["top_n"] = request.top_n
        body = {
            "model": request.model,
            "input": {"query": request.query, "documents": request.documents},
            "parameters": params,
        }
        reply = await self.client.post_json(RERANK_PATH, body)
        results = (reply.get("output") or {}).get("results")
        if not isinstance(results, list):
            raise ProviderError(ErrorKind.RETRYABLE, "DashScope rerank reply has no output.results")
        ranking = [(int(r["index"]), float(r["relevance_score"])) for r in results]
        ranking.sort(key=lambda item: -item[1])
        return RerankResult(ranking, request.model, int((reply.get("usage") or {}).get("total_tokens", 0)))
