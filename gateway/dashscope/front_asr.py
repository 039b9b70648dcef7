"""Front door: qwen3-asr-flash on ``POST /api/v1/services/aigc/multimodal-generation/generation``.

The audio comes inline as a base64 ``data:`` URL in the user message (reference §4.2); it is
decoded through the same checks as every upload (``gateway.inputs.audio``: duration per
surface, expansion cap), charged against the tenant's ``asr_seconds`` quota before any
provider is called, and transcribed by the ASR chain (cloud first, local Whisper on failure).
URLs to fetch are refused: the gateway downloads nothing a caller points it at.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from gateway.audio import AudioDecodeError
from gateway.auth import Principal
from gateway.context import get_context
from gateway.costs import charge_quota
from gateway.dashscope import bodies
from gateway.dashscope.errors import DashScopeError
from gateway.dashscope.sse import SSE_HEADERS, SSE_MEDIA_TYPE, sse_event
from gateway.errors import no_provider_error
from gateway.inputs.audio import decode_upload
from gateway.usage import record
from policies.cache import CacheEntry
from providers.base import ProviderError, TranscribeRequest

#: The ASR providers are fed 16 kHz (what Paraformer and Whisper are trained on).
ASR_RATE = 16000
#: The per-surface audio limit (``settings.limits.audio_max_seconds``) this endpoint uses.
SURFACE = "transcription"
CACHE_KIND = "dashscope-asr"


def _language(params: dict[str, Any]) -> str | None:
    options = params.get("asr_options")
    value = options.get("language") if isinstance(options, dict) else None
    return value if isinstance(value, str) and 0 < len(value) <= 16 else None


def _audio_bytes(body: dict[str, Any]) -> bytes:
    ref = bodies.audio_ref(body)
    if not ref.startswith("data:"):
        raise DashScopeError(
            400,
            "InvalidParameter",
            "talkgate takes the audio inline as a base64 data URL (data:audio/wav;base64,...); "
            "it does not download audio from URLs.",
        )
    return bodies.decode_data_url(ref)[0]


async def transcription(
    request: Request, principal: Principal, body: dict[str, Any], request_id: str
) -> Response:
    services = request.app.state.services
    ctx = get_context(request)
    model = body["model"]
    ctx.model = model
    services.router.resolve("asr", model)  # an unknown model: 404 before any decoding
    params = bodies.parameters(body)
    data = _audio_bytes(body)
    language = _language(params)
    plan = None
    if services.cache is not None:
        digest = await asyncio.to_thread(lambda: hashlib.sha256(data).hexdigest())
        key = {"model": model, "language": language, "audio_sha256": digest}
        plan = services.cache.plan(request.headers, ctx, ctx.tenant or "default", CACHE_KIND, key)
    hit = await plan.get() if plan is not None else None
    if hit is not None:
        ctx.provider, ctx.fallback = hit.meta.get("provider"), bool(hit.meta.get("fallback"))
        text, seconds = hit.meta["text"], hit.meta["seconds"]
    else:
        try:
            audio = await decode_upload(data, ASR_RATE, services.settings.limits, SURFACE)
        except AudioDecodeError as exc:
            raise DashScopeError(415, "BadRequest.UnsupportedFileFormat", str(exc)) from None
        await charge_quota(request, principal, {"asr_seconds": audio.duration_s})
        asr_request = TranscribeRequest(model=model, audio=audio, language=language)
        if services.experiments is not None:
            asr_request = services.experiments.apply("asr", ctx, asr_request)
        try:
            transcript = await services.router.transcribe(asr_request, ctx)
        except ProviderError as exc:
            raise no_provider_error(services, "asr", exc) from None
        record(request, audio_seconds=audio.duration_s)
        text, seconds = transcript.text.strip(), max(1, math.ceil(audio.duration_s))
        if plan is not None and plan.store and not ctx.fallback:
            meta = {"text": text, "seconds": seconds, "provider": ctx.provider, "fallback": False}
            await plan.put(CacheEntry(b"", "application/json", meta))
    words = len(text.split())
    lang = language or "en"
    if not bodies.wants_sse(request.headers):
        return bodies.json_response(bodies.asr_body(request_id, text, "stop", words, seconds, lang))
    incremental = params.get("incremental_output") is True

    async def events() -> AsyncIterator[bytes]:
        yield sse_event(1, bodies.asr_body(request_id, text, "null", words, seconds, lang))
        final = "" if incremental else text
        yield sse_event(2, bodies.asr_body(request_id, final, "stop", words, seconds, lang))

    return StreamingResponse(events(), media_type=SSE_MEDIA_TYPE, headers=SSE_HEADERS)
