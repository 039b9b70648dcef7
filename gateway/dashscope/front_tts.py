"""Front door: qwen-tts on ``POST /api/v1/services/aigc/multimodal-generation/generation``.

``MultiModalConversation.call(model="qwen-tts", text=..., voice=...)`` puts the text and the
voice in ``input`` (reference §5.3). The text is spoken by the TTS chain, as on
``/v1/audio/speech`` (Bailian's qwen-tts first, local piper when the cloud fails), and every
answer is 24 kHz mono 16-bit PCM, Qwen-TTS's own format: its stream carries no rate field, so
a fallback voice at another rate is resampled (``front_tasks.pcm_at_rate``).

- Plain: the whole answer is kept as a WAV among the tenant's artifacts (the store, names and
  expiry of ``/v1/talk``'s: ``lipsync/artifacts.py``) and ``output.audio.url`` points at
  ``GET /api/v1/tts/audio/{name}`` on this gateway. The URL is built from ``public_base_url``
  (``gateway/inputs/hosts.py``: relative when unset, never from the Host header); fetching it
  takes a key with the tts scope of the same tenant, where Bailian hands out a signed OSS URL.
- Streamed (``X-DashScope-SSE``): base64 PCM chunks (``finish_reason`` "null") as the chain
  produces them, then a closing chunk with the same ``audio.url``. A failure after the first
  chunk ends the stream with ``event:error``.
"""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import FileResponse, Response

from gateway.auth import Principal
from gateway.context import get_context
from gateway.costs import charge_quota
from gateway.dashscope import bodies
from gateway.dashscope.errors import DashScopeError, invalid
from gateway.dashscope.front_errors import mid_stream
from gateway.dashscope.front_tasks import pcm_at_rate
from gateway.dashscope.sse import SSE_HEADERS, error_event, sse_event
from gateway.errors import no_provider_error
from gateway.inputs.echo import echo
from gateway.inputs.hosts import public_url
from gateway.sse_response import LastChunk, SSEResponse
from gateway.usage import record
from policies.streamguard import StreamInterrupted
from providers.base import ProviderError, SynthesizeRequest
from providers.cloud.tts import LANGUAGE_TYPES, QWEN_TTS_SAMPLE_RATE
from providers.wav import pcm_to_wav

#: Where a plain answer's audio is fetched (``GET``, tts scope, the caller's tenant only).
AUDIO_PATH = "/api/v1/tts/audio/{name}"
RATE = QWEN_TTS_SAMPLE_RATE
_LANGUAGE_CODES = {name.lower(): code for code, name in LANGUAGE_TYPES.items()}


def synthesize_request(body: dict[str, Any], settings: Any) -> SynthesizeRequest:
    """``input.text`` / ``voice`` / ``language_type`` → the chain's request; 400 for bad input."""
    data = body["input"]
    text = data.get("text")
    if not isinstance(text, str) or not text.strip():
        raise invalid("input.text must be a non-empty string.")
    if len(text) > settings.max_tts_chars:
        raise invalid(
            f"input.text is {len(text)} characters long, above this gateway's limit of "
            f"{settings.max_tts_chars} characters per request."
        )
    voice = data.get("voice")
    if voice is not None and (not isinstance(voice, str) or not voice or len(voice) > 128):
        raise invalid("input.voice must be a voice name.")
    voice = voice or settings.voices.default
    language = data.get("language_type")
    code = _LANGUAGE_CODES.get(language.lower()) if isinstance(language, str) else None
    return SynthesizeRequest(
        model=body["model"], text=text, voice=settings.voices.aliases.get(voice, voice), language=code
    )


async def speech(request: Request, principal: Principal, body: dict[str, Any], request_id: str) -> Response:
    """The native answer for an admitted caller (auth, limits and the usage row are the route's)."""
    services = request.app.state.services
    ctx = get_context(request)
    ctx.model = body["model"]
    services.router.resolve("tts", body["model"])  # an unknown model: 404 before anything else
    tts = synthesize_request(body, services.settings)
    await charge_quota(request, principal, {"tts_chars": len(tts.text)})
    if services.experiments is not None:
        tts = services.experiments.apply("tts", ctx, tts)
    try:
        stream = await services.router.synthesize_stream(tts, ctx)
    except ProviderError as exc:
        raise no_provider_error(services, "tts", exc) from None
    record(request, characters=len(tts.text))
    artifacts = services.renderer.artifacts
    name = f"{artifacts.new_stem()}.wav"
    path = artifacts.path_for(name, principal.tenant)
    audio = {
        "data": "",
        "url": public_url(services.settings.public_base_url, AUDIO_PATH.format(name=name)),
        "id": f"audio_{request_id}",
        "expires_at": int(time.time() + artifacts.ttl_s),
    }
    usage = {"characters": len(tts.text)}

    def answer(finish: str, audio: dict[str, Any]) -> dict[str, Any]:
        return {"request_id": request_id, "output": {"finish_reason": finish, "audio": audio}, "usage": usage}

    if not bodies.wants_sse(request.headers):
        pcm = bytearray()
        try:
            async for chunk in stream:
                pcm += pcm_at_rate(chunk, RATE)
        except StreamInterrupted as exc:  # nothing was sent yet: a clean error, not a cut answer
            raise mid_stream(exc) from None
        finally:
            await _close(stream)
        await anyio.Path(path).write_bytes(pcm_to_wav(bytes(pcm), RATE))
        return bodies.json_response(answer("stop", audio))

    async def events() -> AsyncIterator[bytes]:
        seq, pcm = 0, bytearray()
        try:
            async for chunk in stream:
                piece = pcm_at_rate(chunk, RATE)
                if piece:
                    pcm += piece
                    seq += 1
                    data = {"data": base64.b64encode(piece).decode(), "id": audio["id"]}
                    yield sse_event(seq, answer("null", data))
            await anyio.Path(path).write_bytes(pcm_to_wav(bytes(pcm), RATE))
        except Exception as exc:
            err = mid_stream(exc)
            record(request, status=err.status)
            yield error_event(seq + 1, err.status, err.code, err.message, request_id)
            return
        finally:
            await _close(stream)
        yield LastChunk(sse_event(seq + 1, answer("stop", audio)))

    return SSEResponse(events(), headers=SSE_HEADERS)


async def _close(stream: Any) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()


def audio_file(request: Request, principal: Principal, name: str) -> Response:
    """The WAV behind a plain answer's ``audio.url``; 404 when unknown, expired or another tenant's."""
    path = request.app.state.services.renderer.artifacts.lookup(name, principal.tenant)
    if path is None:
        raise DashScopeError(404, "NotFound", f"No audio '{echo(name)}' (unknown or expired).")
    return FileResponse(path, media_type="audio/wav")
