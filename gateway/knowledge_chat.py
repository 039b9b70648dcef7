"""The chat route's use of the knowledge base: the ``knowledge`` extension field, grounding, citations.

A request names stores with ``"knowledge": {"vector_store_ids": [...], "max_num_results": 5}``
(the openai SDK sends it with ``extra_body``); naming stores needs the ``knowledge:read`` scope, a
request that names none uses its key's or tenant's default stores, and ``{"vector_store_ids": []}``
opts out (gateway/knowledge/spec.py). The last user message is
the query. With no passage above the threshold the answer is a fixed decline, without a model call;
otherwise the passages go into the prompt (gateway/knowledge/grounding.py) and the answer carries:

- ``choices[0].message.annotations``: OpenAI ``url_citation`` spans over each valid [n] marker;
- top-level ``citations``: file id, filename, chunk, score and quote of each cited passage;
- top-level ``knowledge``: stores searched, ``answered``, search mode, passages given, dropped markers.

A stream sends the same ``citations``/``knowledge`` in one extra chunk (``choices: []``) before
``[DONE]``, as OpenAI sends usage. Kept out of the route module so that the route stays thin, and
out of gateway/knowledge/ so that the knowledge package knows no chat wire format.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response

from gateway.errors import APIError
from gateway.knowledge.api import not_found
from gateway.knowledge.grounding import Grounding
from gateway.knowledge.service import NotFound
from gateway.knowledge.spec import (
    KnowledgeScopeError,
    KnowledgeSpecError,
    check_read,
    effective_spec,
    parse_spec,
    principal_default,
    principal_scopes,
)
from gateway.sse_response import LastChunk, SSEResponse
from gateway.streaming import DONE, SSE_HEADERS, ChunkWriter, StreamMeter, chat_sse
from providers.base import ChatChunk, Usage


def last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content.strip()
            parts = [
                p.get("text", "") for p in content or [] if isinstance(p, dict) and p.get("type") == "text"
            ]
            return " ".join(parts).strip()
    return ""


async def ground(
    request: Request, raw: Any, messages: list[dict[str, Any]], ctx: Any, principal: Any = None
) -> Grounding | None:
    """The grounding for this request, or None when it names no knowledge (and neither its key nor
    its tenant has defaults, or it opted out). 400 for a bad field, 403 without knowledge:read."""
    services = request.app.state.services
    tenant = ctx.tenant or "default"
    try:
        spec = parse_spec(raw)
        check_read(spec, principal_scopes(principal))
    except KnowledgeSpecError as exc:
        raise APIError(400, str(exc), param=exc.param) from None
    except KnowledgeScopeError as exc:
        raise scope_error(exc) from None
    spec = effective_spec(
        spec, principal_default(principal), services.settings.knowledge.tenant_default_stores.get(tenant)
    )
    if spec is None:
        return None
    if services.retriever is None:
        raise APIError(503, "The knowledge base is not enabled on this gateway.", code="knowledge_disabled")
    query = last_user_text(messages)
    if not query:
        raise APIError(400, "knowledge needs a user message with text to search for.", param="messages")
    try:
        grounding = await services.retriever.retrieve(
            tenant, query, spec["vector_store_ids"], spec["max_num_results"], parent=ctx
        )
    except NotFound as exc:
        raise not_found(exc) from None
    if not grounding.answerable:
        ctx.provider = "talkgate:knowledge"  # the decline is the gateway's own answer
    return grounding


def scope_error(exc: KnowledgeScopeError) -> APIError:
    """The 403 for stores named by a key without knowledge:read (chat and /v1/talk)."""
    return APIError(403, str(exc), type="permission_error", code="insufficient_scope", param=exc.param)


def summary(grounding: Grounding, answer: str) -> dict[str, Any]:
    citations = grounding.citations(answer) if grounding.answerable else []
    return {
        "citations": citations,
        "knowledge": {
            "vector_store_ids": sorted({p.hit.store_id for p in grounding.passages}),
            "answered": grounding.answerable,
            "search_mode": grounding.mode,
            "passages": len(grounding.passages),
            "dropped_citations": grounding.dropped_citations,
        },
    }


def cite(body: dict[str, Any], grounding: Grounding) -> dict[str, Any]:
    """Adds the citations to a non-streamed completion body."""
    message = body["choices"][0]["message"]
    answer = message.get("content") or ""
    message["annotations"] = grounding.annotations(answer)
    body.update(summary(grounding, answer))
    return body


async def with_citations(
    stream: AsyncIterator[bytes], grounding: Grounding, meter: StreamMeter, head: dict[str, Any]
) -> AsyncIterator[bytes]:
    """``chat_sse`` bytes with one citations chunk put before ``[DONE]`` (a cut stream gets none)."""
    async for piece in stream:
        if isinstance(piece, LastChunk) and piece.endswith(DONE):
            extra = {
                **head,
                "object": "chat.completion.chunk",
                "choices": [],
                **summary(grounding, "".join(meter.parts)),
            }
            piece = LastChunk(piece[: -len(DONE)] + b"data: " + orjson.dumps(extra) + b"\n\n" + DONE)
        yield piece


def declined(
    grounding: Grounding, completion_id: str, created: int, model: str, stream: bool, include_usage: bool
) -> Response:
    """The fixed "not in the knowledge base" answer, with no model call (nothing to bill)."""
    text = grounding.decline_text()
    if stream:

        async def one() -> AsyncIterator[ChatChunk]:
            yield ChatChunk(delta=text, finish_reason="stop", usage=Usage())

        meter = StreamMeter([])
        writer = ChunkWriter(completion_id, created, model, include_usage)
        head = {"id": completion_id, "created": created, "model": model}
        sse = chat_sse(one(), writer, include_usage, None, meter)
        return SSEResponse(with_citations(sse, grounding, meter, head), headers=SSE_HEADERS)
    body = {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None, "annotations": []},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        **summary(grounding, text),
    }
    return Response(orjson.dumps(body), media_type="application/json")
