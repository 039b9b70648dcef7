"""Front door: ``POST /api/v1/services/aigc/text-generation/generation`` answered by the chat chain.

A native body (reference §2.1) becomes the same ``ChatRequest`` an OpenAI client would produce
(``gateway.inputs.chat``: tools, JSON mode, limits judged alike), goes through the router (its
chain, breakers, local fallback), and the answer is written back in DashScope's shapes: plain
JSON, or SSE (``X-DashScope-SSE: enable``) with ``incremental_output`` either way and
``result_format`` text or message. A stream that fails after its first event ends with
``event:error``; nothing is retried after the first byte (design: streaming).

Qwen-VL calls on the multimodal-generation endpoint take the same path with ``multimodal``:
``{"image"}`` parts become OpenAI ``image_url`` parts, checked and inlined exactly as on
``/v1/chat/completions`` (``gateway/structured/images.py``: header-first size checks, allowed
hosts only), targets that take no images are skipped, and the answer's content is a list of
``{"text"}`` items, as that endpoint writes it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Any

import orjson
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from gateway.context import RequestContext, get_context
from gateway.dashscope import bodies
from gateway.dashscope.errors import DashScopeError
from gateway.dashscope.front_errors import mid_stream, validation_message
from gateway.dashscope.sse import SSE_HEADERS, GenerationEvents, error_event, sse_event
from gateway.errors import no_provider_error
from gateway.inputs.chat import build_chat_request, target_skip
from gateway.schemas import ChatCompletionRequest
from gateway.sse_response import LastChunk, SSEResponse
from gateway.streaming import StreamMeter
from gateway.structured.answers import AnswerCheck, is_structured
from gateway.structured.images import has_images, inline_images
from gateway.usage import record
from policies.cache import CacheEntry, chat_is_deterministic
from providers.base import ChatChunk, ChatRequest, ChatResult, ProviderError, Usage

#: Native ``parameters`` with an OpenAI field of the same meaning.
_SAME_MEANING = (
    "max_tokens",
    "temperature",
    "top_p",
    "seed",
    "stop",
    "n",
    "presence_penalty",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
)
#: Native sampling options with no OpenAI field: handed to the provider in ``ChatRequest.extra``.
_EXTRA = ("top_k", "repetition_penalty", "enable_search", "enable_thinking")
CACHE_KIND = "dashscope-chat"


def _part(part: Any) -> Any:
    """A native content part (``{"text"}``, ``{"image"}``) as an OpenAI one."""
    if isinstance(part, dict) and "type" not in part:
        if isinstance(part.get("text"), str):
            return {"type": "text", "text": part["text"]}
        if isinstance(part.get("image"), str):
            return {"type": "image_url", "image_url": {"url": part["image"]}}
    return part


def openai_body(body: dict[str, Any], messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The OpenAI chat body with the same meaning as a native one."""
    out_messages = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, list):
            content = [_part(p) for p in content]
        out_messages.append({**m, "content": content})
    out: dict[str, Any] = {"model": body.get("model"), "messages": out_messages}
    params = bodies.parameters(body)
    for name in _SAME_MEANING:
        if params.get(name) is not None:
            out[name] = params[name]
    return out


def build_request(body: dict[str, Any], services: Any, echo_limit: int | None = None) -> ChatRequest:
    """Native body → ChatRequest; DashScopeError 400 (Bailian's wording) for what it refuses."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise DashScopeError(400, "BadRequest.EmptyModel", 'Required parameter "model" missing from request.')
    parsed = bodies.generation_input(body)
    if parsed is None:
        raise DashScopeError(400, "InvalidParameter", bodies.EMPTY_INPUT)
    params = bodies.parameters(body)
    problem = bodies.bad_max_tokens(params.get("max_tokens"))
    if problem:
        raise DashScopeError(400, "InvalidParameter", problem)
    try:
        chat_body = ChatCompletionRequest.model_validate(openai_body(body, parsed[0]))
    except ValidationError as exc:
        errors = RequestValidationError(exc.errors(include_url=False, include_context=False))
        raise DashScopeError(400, "InvalidParameter", validation_message(errors, echo_limit)) from None
    request = build_chat_request(chat_body, services)
    for name in _EXTRA:
        if params.get(name) is not None:
            request.extra[name] = params[name]
    return request


def _tool_entries(result: ChatResult) -> list[dict[str, Any]]:
    return [
        {
            "id": c.id,
            "type": "function",
            "index": c.index,
            "function": {"name": c.name, "arguments": c.arguments},
        }
        for c in result.tool_calls
    ]


def answer_body(result: ChatResult, request_id: str, fmt: str, parts: bool = False) -> dict[str, Any]:
    finish = "tool_calls" if result.tool_calls else result.finish_reason
    return {
        "output": bodies.generation_output(
            result.text, finish, fmt, _tool_entries(result) or None, parts=parts
        ),
        "usage": bodies.generation_usage(result.usage.prompt_tokens, result.usage.completion_tokens),
        "request_id": request_id,
    }


async def _stream_events(
    chunks: AsyncIterator[ChatChunk],
    request_id: str,
    fmt: str,
    incremental: bool,
    meter: StreamMeter,
    parts: bool = False,
) -> AsyncIterator[bytes]:
    """Provider chunks → native SSE events (cumulative usage on each, ``finish_reason`` "null"
    until the last); a failure after the first event → ``event:error`` and the end.

    As on /v1 (``gateway.streaming.chat_sse``), the text of the chunk that carries the finish
    reason goes out with the closing event, in one write (``LastChunk``)."""
    events = GenerationEvents(request_id, fmt, parts)
    seq, finish, pending = 0, "stop", b""
    prompt_tokens = meter.tokens()[0]
    texts = meter.parts
    try:
        async for chunk in chunks:
            if chunk.usage is not None:
                meter.usage = chunk.usage
            if chunk.delta:
                texts.append(chunk.delta)
                seq += 1
                text = chunk.delta if incremental else "".join(texts)
                pending += events.text(seq, text, prompt_tokens, len(texts))
            if chunk.finish_reason:
                finish = chunk.finish_reason
            elif pending:
                yield pending
                pending = b""
    except Exception as exc:
        err = mid_stream(exc)
        meter.error_status = err.status
        yield pending + error_event(seq + 1, err.status, err.code, err.message, request_id)
        return
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()
    usage = meter.usage or Usage(prompt_tokens, len(texts))
    final_text = "" if incremental else "".join(texts)
    body = {
        "output": bodies.generation_output(final_text, finish, fmt, parts=parts),
        "usage": bodies.generation_usage(usage.prompt_tokens, usage.completion_tokens),
        "request_id": request_id,
    }
    yield LastChunk(pending + sse_event(seq + 1, body))
    meter.finish_reason, meter.finished = finish, True


async def _replay(result: ChatResult, request_id: str, fmt: str, parts: bool = False) -> AsyncIterator[bytes]:
    """A whole (checked or cached) answer as a native stream: its text, then the final event."""
    seq, head = 0, b""
    usage = bodies.generation_usage(result.usage.prompt_tokens, result.usage.completion_tokens)
    if result.text and not result.tool_calls:
        seq += 1
        output = bodies.generation_output(result.text, "null", fmt, parts=parts)
        head = sse_event(seq, {"output": output, "usage": usage, "request_id": request_id})
    body = answer_body(result, request_id, fmt, parts)
    if not result.tool_calls:
        body["output"] = bodies.generation_output("", result.finish_reason, fmt, parts=parts)
    yield LastChunk(head + sse_event(seq + 1, body))


def _sse(events: AsyncIterator[bytes]) -> Response:
    """The chat route's stream writer (``gateway.sse_response``): no task group per stream, and
    events that are ready together go out in one write."""
    return SSEResponse(events, headers=SSE_HEADERS)


def _cache_plan(request: Request, services: Any, ctx: RequestContext, chat: ChatRequest) -> Any:
    if services.cache is None or chat.tools:
        return None
    deterministic = chat_is_deterministic(chat.temperature, chat.seed)
    params = {"request": asdict(chat)} if deterministic else {}
    return services.cache.plan(
        request.headers, ctx, ctx.tenant or "default", CACHE_KIND, params, deterministic=deterministic
    )


async def generation(
    request: Request, body: dict[str, Any], request_id: str, multimodal: bool = False
) -> Response:
    """The native answer for an admitted caller (auth, limits and the usage row are the route's).
    ``multimodal``: a Qwen-VL call on the multimodal-generation endpoint (its answer shape)."""
    services = request.app.state.services
    ctx = get_context(request)
    ctx.model = body.get("model") if isinstance(body.get("model"), str) else None
    chat = build_request(body, services)
    if services.experiments is not None:
        chat = services.experiments.apply("chat", ctx, chat)
    params = bodies.parameters(body)
    fmt = "message" if multimodal else bodies.result_format(params)
    stream = bodies.wants_sse(request.headers)
    plan = _cache_plan(request, services, ctx, chat)
    if plan is not None and (hit := await plan.get()) is not None:
        ctx.provider, ctx.fallback = hit.meta.get("provider"), bool(hit.meta.get("fallback"))
        cached = ChatResult(hit.meta["text"], hit.meta["finish_reason"], Usage(*hit.meta["usage"]))
        if stream:
            return _sse(_replay(cached, request_id, fmt, multimodal))
        return bodies.json_response(answer_body(cached, request_id, fmt, multimodal))
    check = AnswerCheck(chat) if is_structured(chat) else None
    # Images are checked and inlined as on /v1 (gateway/structured/images.py); a chain with no
    # target that sees images is a 400 before any call.
    images = await inline_images(chat.messages, services.settings) if has_images(chat.messages) else 0
    skip = target_skip(services, chat, images)
    if stream and check is None:
        try:
            chunks = await services.router.chat_stream(chat, ctx, skip)
        except ProviderError as exc:
            raise no_provider_error(services, "chat", exc) from None
        if images and services.metrics is not None:
            services.metrics.vision(ctx.provider)
        meter = ctx.extra["stream_meter"] = StreamMeter(chat.messages)
        incremental = params.get("incremental_output") is True
        events = _stream_events(chunks, request_id, fmt, incremental, meter, multimodal)
        return _sse(_stored_after(events, meter, plan, ctx) if plan is not None else events)
    try:
        result = await services.router.chat(chat, ctx, check, skip)
    except ProviderError as exc:
        raise no_provider_error(services, "chat", exc) from None
    record(request, tokens_in=result.usage.prompt_tokens, tokens_out=result.usage.completion_tokens)
    if services.metrics is not None:
        services.metrics.tool_calls(ctx.provider, len(result.tool_calls))
        if images:
            services.metrics.vision(ctx.provider)
    await _store(plan, ctx, result)
    if stream:
        return _sse(_replay(result, request_id, fmt, multimodal))
    answer = answer_body(result, request_id, fmt, multimodal)
    return Response(orjson.dumps(answer), media_type="application/json")


async def _store(plan: Any, ctx: RequestContext, result: ChatResult) -> None:
    """Keep a primary's answer (never a fallback's, never tool calls) for identical requests."""
    if plan is None or not plan.store or ctx.fallback or result.tool_calls:
        return
    usage = [result.usage.prompt_tokens, result.usage.completion_tokens]
    meta = {"text": result.text, "finish_reason": result.finish_reason, "usage": usage}
    await plan.put(CacheEntry(b"", "application/json", {**meta, "provider": ctx.provider, "fallback": False}))


async def _stored_after(
    events: AsyncIterator[bytes], meter: StreamMeter, plan: Any, ctx: RequestContext
) -> AsyncIterator[bytes]:
    """The stream, then (after its last byte went out) its answer into the cache."""
    async for event in events:
        yield event
    if meter.finished:
        prompt, completion = meter.tokens()
        answer = ChatResult("".join(meter.parts), meter.finish_reason, Usage(prompt, completion))
        await _store(plan, ctx, answer)  # a stream cut by max_tokens replays as "length" too
