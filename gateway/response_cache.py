"""Route-side glue between the OpenAI handlers and ``policies.cache``: cache keys per endpoint,
replaying a cached chat answer as JSON or as an SSE stream, and teeing streamed audio into
the cache.

Semantics: a cache hit returns the stored bytes unchanged (same completion id, same audio) and
is recorded in usage with ``cache=hit`` and no upstream usage (hits do not count against
token/character/second quotas or the tokens-per-minute limit). Entries are per tenant.

An answer produced by a fallback target (``ctx.fallback``: the primary failed) is never stored:
degraded output from an outage must not be pinned for the whole TTL after the cloud recovers.
Every entry keeps the provider and fallback flag it was produced with, and a hit replays both
into the ``x-talkgate-provider`` / ``x-talkgate-fallback`` headers.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict
from typing import Any

from fastapi import Request
from fastapi.responses import Response, StreamingResponse

from gateway.streaming import DONE, SSE_HEADERS, ChunkWriter
from policies.cache import CacheEntry, CachePlan, chat_is_deterministic
from providers.base import Usage

_HASH_IN_THREAD_BYTES = 1 << 20  # hashing a large upload off the event loop


def _plan(
    request: Request, kind: str, params: dict[str, Any], deterministic: bool = True
) -> CachePlan | None:
    from gateway.context import get_context

    services = request.app.state.services
    if services.cache is None:
        return None
    ctx = get_context(request)
    tenant = ctx.tenant or "default"
    return services.cache.plan(request.headers, ctx, tenant, kind, params, deterministic=deterministic)


# --------------------------------------------------------------------------- chat


def chat_plan(request: Request, requested_model: str, chat_request: Any) -> CachePlan | None:
    """Only deterministic requests (temperature 0 or a seed) unless ``x-talkgate-cache: force``."""
    deterministic = chat_is_deterministic(chat_request.temperature, chat_request.seed)
    if not deterministic and (request.headers.get("x-talkgate-cache") or "").strip().lower() != "force":
        # The plan bypasses the cache and computes no key: skip the asdict() copy of the request.
        return _plan(request, "chat", {}, deterministic)
    params = {"requested_model": requested_model, "request": asdict(chat_request)}
    return _plan(request, "chat", params, deterministic)


def storable(plan: CachePlan | None, ctx: Any) -> bool:
    """Store this answer? Only when the plan allows it and no fallback target produced it."""
    return plan is not None and plan.store and not ctx.fallback


def _origin(ctx: Any) -> dict[str, Any]:
    return {"provider": ctx.provider, "fallback": bool(ctx.fallback)}


def _replay_origin(request: Request, entry: CacheEntry) -> None:
    """A hit reports the provider and fallback flag the stored answer was produced with."""
    from gateway.context import get_context

    ctx = get_context(request)
    ctx.provider = entry.meta.get("provider")
    ctx.fallback = bool(entry.meta.get("fallback", False))


def chat_entry(
    body: bytes, completion_id: str, created: int, text: str, finish: str, usage: Usage | None, ctx: Any
) -> CacheEntry:
    meta = {
        "id": completion_id,
        "created": created,
        "text": text,
        "finish_reason": finish,
        "usage": [usage.prompt_tokens, usage.completion_tokens] if usage else None,
        **_origin(ctx),
    }
    return CacheEntry(body, "application/json", meta)


def chat_hit_response(
    request: Request, entry: CacheEntry, model: str, stream: bool, include_usage: bool
) -> Response:
    """The cached answer: the identical JSON bytes, or replayed as SSE when the client streams."""
    _replay_origin(request, entry)
    if not stream:
        return Response(entry.body, media_type=entry.media_type)
    writer = ChunkWriter(entry.meta["id"], entry.meta["created"], model, include_usage)
    usage = entry.meta.get("usage")

    async def replay() -> AsyncIterator[bytes]:
        yield writer.role()
        if entry.meta["text"]:
            yield writer.content(entry.meta["text"])
        yield writer.finish(entry.meta["finish_reason"])
        if include_usage:
            yield writer.usage(Usage(*usage) if usage else Usage())
        yield DONE

    return StreamingResponse(replay(), media_type="text/event-stream", headers=SSE_HEADERS)


def chat_stream_done(
    request: Request,
    plan: CachePlan | None,
    completion_id: str,
    created: int,
    build_body: Callable[[str, str, Usage | None], bytes],
) -> Callable[[str, str, Usage | None], None]:
    """``on_done`` for ``chat_sse``: stores the finished answer (tokens are booked by its StreamMeter)."""
    from gateway.context import get_context

    ctx = get_context(request)

    def on_done(text: str, finish: str, usage: Usage | None) -> None:
        if storable(plan, ctx):
            assert plan is not None
            entry = chat_entry(
                build_body(text, finish, usage), completion_id, created, text, finish, usage, ctx
            )
            request.app.state.services.cache.put_later(plan, entry)

    return on_done


# --------------------------------------------------------------------------- speech


def speech_plan(request: Request, body: Any, tts_request: Any) -> CachePlan | None:
    params = {"requested_model": body.model, "format": body.response_format, "request": asdict(tts_request)}
    return _plan(request, "tts", params)


def speech_hit_response(request: Request, entry: CacheEntry) -> Response:
    _replay_origin(request, entry)
    return Response(entry.body, media_type=entry.media_type, headers=entry.meta.get("headers") or {})


async def tee_into_cache(
    chunks: AsyncIterator[bytes], plan: CachePlan | None, media_type: str, headers: dict[str, str], ctx: Any
) -> AsyncIterator[bytes]:
    """Passes audio through; once it has ended cleanly, stores the whole file (if under the size cap
    and not produced by a fallback voice)."""
    parts: list[bytes] | None = [] if storable(plan, ctx) else None
    cap = plan.cache.config.max_entry_bytes if plan is not None and plan.cache is not None else 0
    size = 0
    async for chunk in chunks:
        if parts is not None:
            size += len(chunk)
            if size > cap:
                parts = None
            else:
                parts.append(chunk)
        yield chunk
    if parts is not None and plan is not None:
        await plan.put(CacheEntry(b"".join(parts), media_type, {"headers": headers, **_origin(ctx)}))


# --------------------------------------------------------------------------- transcription


async def transcription_plan(request: Request, data: bytes, params: Any) -> CachePlan | None:
    services = request.app.state.services
    if services.cache is None:
        return None
    if len(data) > _HASH_IN_THREAD_BYTES:
        digest = await asyncio.to_thread(lambda: hashlib.sha256(data).hexdigest())
    else:
        digest = hashlib.sha256(data).hexdigest()
    return _plan(request, "asr", {"audio_sha256": digest, "params": params.model_dump()})


def response_entry(response: Response, ctx: Any) -> CacheEntry:
    return CacheEntry(
        bytes(response.body),
        response.headers.get("content-type", "application/octet-stream"),
        _origin(ctx),
    )


def cached_response(request: Request, entry: CacheEntry) -> Response:
    _replay_origin(request, entry)
    return Response(entry.body, headers={"content-type": entry.media_type})
