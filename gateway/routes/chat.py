"""``POST /v1/chat/completions``: OpenAI-compatible chat, plain and streamed (SSE).

This is the hot path (benchmarked: about a millisecond added over calling the upstream
directly), so the body is parsed with orjson and validated once, and responses are built
as dicts and serialised with orjson, with no response-model round trip.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.types import Send

from gateway import knowledge_chat, response_cache
from gateway.auth import Principal, require_scope, run_admitted
from gateway.context import RequestContext, get_context
from gateway.errors import no_provider_error, refuse_unknown_model
from gateway.inputs.chat import build_chat_request, target_skip
from gateway.schemas import ChatCompletionRequest, parse_json_body, read_body, validate
from gateway.services import Services
from gateway.sse_response import SSEResponse
from gateway.streaming import SSE_HEADERS, ChunkWriter, StreamMeter, chat_sse, usage_dict
from gateway.structured.answers import AnswerCheck, is_structured
from gateway.structured.images import has_images, inline_images
from gateway.structured.streams import open_chat_stream
from gateway.usage import record
from policies.routing import UnknownModelError
from providers.base import ChatResult, ProviderError, Usage

router = APIRouter()


def completion_body(completion_id: str, created: int, model: str, result: ChatResult) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": message_body(result),
                "logprobs": None,
                "finish_reason": result.finish_reason,
            }
        ],
        "usage": usage_dict(result.usage),
    }


def message_body(result: ChatResult) -> dict[str, Any]:
    """The assistant message of a completion: text, or the tool calls (content null, as OpenAI)."""
    if not result.tool_calls:
        return {"role": "assistant", "content": result.text, "refusal": None}
    return {
        "role": "assistant",
        "content": result.text or None,
        "refusal": None,
        "tool_calls": [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in result.tool_calls
        ],
    }


def new_completion_id() -> str:
    return "chatcmpl-" + os.urandom(12).hex()


@router.post("/v1/chat/completions")
async def chat_completions(request: Request, principal: Principal = require_scope("chat")) -> Response:
    return await chat_response(request, principal)


async def chat_completions_lean(request: Request, send: Send) -> None:
    """The same route without FastAPI's routing and dependency solving (gateway/fastpath.py)."""

    async def respond(principal: Principal) -> None:
        response = await chat_response(request, principal)
        await response(request.scope, request.receive, send)

    await run_admitted(request, "chat", respond)


chat_completions.lean_endpoint = chat_completions_lean  # type: ignore[attr-defined]


async def chat_response(request: Request, principal: Principal | None = None) -> Response:
    """The chat answer for an admitted caller (auth, limits and usage are the caller's job;
    ``principal``'s scopes and default stores decide the knowledge grounding)."""
    try:
        return await _chat_response(request, principal)
    except UnknownModelError as exc:  # before the first byte: streams resolve their chain first
        raise refuse_unknown_model(request, exc) from None


async def _chat_response(request: Request, principal: Principal | None) -> Response:
    services: Services = request.app.state.services
    body: ChatCompletionRequest = validate(
        ChatCompletionRequest, parse_json_body(await read_body(request, services.settings.max_upload_bytes))
    )
    chat_request = build_chat_request(body, services)
    ctx: RequestContext = get_context(request)
    ctx.model = body.model
    if body.user and ctx.user is None:
        ctx.user = body.user
    if services.experiments is not None:  # A/B: may change model / system prompt, sets ctx.variant
        chat_request = services.experiments.apply("chat", ctx, chat_request)
    completion_id = new_completion_id()
    created = int(time.time())
    include_usage = bool(body.stream and body.stream_options and body.stream_options.include_usage)
    # Knowledge (gateway/knowledge_chat.py): passages into the prompt, or a decline with no model call.
    grounding = await knowledge_chat.ground(request, body.knowledge, chat_request.messages, ctx, principal)
    if grounding is not None:
        if not grounding.answerable:
            return knowledge_chat.declined(
                grounding, completion_id, created, body.model, bool(body.stream), include_usage
            )
        chat_request = replace(chat_request, messages=grounding.ground(chat_request.messages))
    # Exact-match cache (gateway/response_cache.py): deterministic requests only, per tenant.
    # Tool-call and grounded answers are not cached (an entry replays text, not citations).
    cacheable = not chat_request.tools and grounding is None
    plan = response_cache.chat_plan(request, body.model, chat_request) if cacheable else None
    if plan is not None and (hit := await plan.get()) is not None:
        return response_cache.chat_hit_response(request, hit, body.model, bool(body.stream), include_usage)
    check = AnswerCheck(chat_request) if is_structured(chat_request) else None
    images = (
        await inline_images(chat_request.messages, services.settings)
        if has_images(chat_request.messages)
        else 0
    )
    skip = target_skip(services, chat_request, images)

    if body.stream:
        try:
            chunks = await open_chat_stream(services.router, chat_request, ctx, skip, services.metrics)
        except ProviderError as exc:
            raise no_provider_error(services, "chat", exc) from None
        if images and services.metrics is not None:
            services.metrics.vision(ctx.provider)
        writer = ChunkWriter(completion_id, created, body.model, include_usage)
        # Booked by the auth dependency after the response, however the stream ends (D3 billing).
        meter = ctx.extra["stream_meter"] = StreamMeter(chat_request.messages)
        on_done = response_cache.chat_stream_done(
            request,
            plan,
            completion_id,
            created,
            lambda text, finish, usage: orjson.dumps(
                completion_body(
                    completion_id, created, body.model, ChatResult(text, finish, usage or Usage())
                )
            ),
        )
        sse = chat_sse(chunks, writer, include_usage, on_done, meter)
        if grounding is not None:
            head = {"id": completion_id, "created": created, "model": body.model}
            sse = knowledge_chat.with_citations(sse, grounding, meter, head)
        return SSEResponse(sse, headers=SSE_HEADERS)

    try:
        result = await services.router.chat(chat_request, ctx, check, skip)
    except ProviderError as exc:
        raise no_provider_error(services, "chat", exc) from None
    record(request, tokens_in=result.usage.prompt_tokens, tokens_out=result.usage.completion_tokens)
    if services.metrics is not None:
        services.metrics.tool_calls(ctx.provider, len(result.tool_calls))
        if images:
            services.metrics.vision(ctx.provider)
    answer = completion_body(completion_id, created, body.model, result)
    content = orjson.dumps(knowledge_chat.cite(answer, grounding) if grounding is not None else answer)
    if response_cache.storable(plan, ctx):
        assert plan is not None
        entry = response_cache.chat_entry(
            content, completion_id, created, result.text, result.finish_reason, result.usage, ctx
        )
        await plan.put(entry)
    return Response(content, media_type="application/json")
