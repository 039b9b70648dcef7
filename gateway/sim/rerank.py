"""``POST /api/v1/services/rerank/text-rerank/text-rerank`` as Bailian answers it.

Relevance is deterministic: the cosine of the simulator's embedding vectors of the query and each
document (gateway/sim/embedding.py), clipped to [0, 1], so the ranking follows shared words and a
document unrelated to the query scores near 0. Limits (reference rag.md §1.3): query and documents
required, at most 500 documents, 4,000 tokens per item (longer items are truncated, as documented).
"""

from __future__ import annotations

import numpy as np
from starlette.requests import Request
from starlette.responses import Response

from gateway.dashscope.bodies import json_response
from gateway.dashscope.errors import native_error
from gateway.sim.admission import admit
from gateway.sim.embedding import vector
from gateway.sim.state import SimState
from gateway.sim.text import count_tokens, tokens

PATH = "/api/v1/services/rerank/text-rerank/text-rerank"
MODELS = frozenset({"gte-rerank", "gte-rerank-v2", "qwen3-rerank"})
MAX_DOCUMENTS = 500
MAX_ITEM_TOKENS = 4000
DIMENSION = 1024


def _truncated(text: str) -> str:
    return text if count_tokens(text) <= MAX_ITEM_TOKENS else "".join(tokens(text)[:MAX_ITEM_TOKENS])


async def text_rerank(request: Request) -> Response:
    state: SimState = request.app.state.sim
    call = await admit(request, state, "rerank", lambda m: m in MODELS, native_error)
    if isinstance(call, Response):
        return call

    def bad(message: str, code: str = "InvalidParameter") -> Response:
        call.record["status"] = 400
        return native_error(400, code, message, call.request_id)

    data = call.body.get("input") if isinstance(call.body.get("input"), dict) else {}
    query, documents = data.get("query"), data.get("documents")
    if not isinstance(query, str) or not query.strip():
        return bad('Required parameter "input.query" missing from request.', "BadRequest.EmptyInput")
    if not isinstance(documents, list) or not documents or not all(isinstance(d, str) for d in documents):
        return bad('Required parameter "input.documents" missing from request.', "BadRequest.EmptyInput")
    if len(documents) > MAX_DOCUMENTS:
        return bad(f"Value error, documents should not be more than {MAX_DOCUMENTS}.: input.documents")
    params = call.body.get("parameters") or {}
    top_n = params.get("top_n", len(documents))
    if not isinstance(top_n, int) or top_n < 1:
        return bad("Value error, top_n should be a positive integer.: parameters.top_n")
    q = np.asarray(vector(_truncated(query), DIMENSION))
    scores = [float(np.clip(q @ np.asarray(vector(_truncated(d), DIMENSION)), 0.0, 1.0)) for d in documents]
    order = sorted(range(len(documents)), key=lambda i: (-scores[i], i))[:top_n]
    results = []
    for i in order:
        item: dict[str, object] = {"index": i, "relevance_score": round(scores[i], 6)}
        if params.get("return_documents"):
            item["document"] = {"text": documents[i]}
        results.append(item)
    total = count_tokens(query) * len(documents) + sum(count_tokens(d) for d in documents)
    body = {"output": {"results": results}, "usage": {"total_tokens": total}, "request_id": call.request_id}
    return json_response(body)
