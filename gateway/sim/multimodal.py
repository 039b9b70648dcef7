"""``POST /api/v1/services/aigc/multimodal-generation/generation``: qwen3-asr-flash, qwen-tts, Qwen-VL.

ASR takes a base64 data-URL (or a URL this simulator served) in the user message and answers with
the configured transcript (reference §4.2). TTS answers plain calls with ``audio.url`` pointing at
``GET /sim/audio/{name}`` and SSE calls with base64 PCM chunks, then a final chunk with the URL
(reference §5.3). Models with the ``vision`` capability (``capabilities``) are answered by
``vl_chat``: image description, tools and JSON mode; their faults count as "generation".
"""

from __future__ import annotations

import asyncio
import base64
import math
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlparse

from starlette.requests import Request
from starlette.responses import Response

from gateway.dashscope.bodies import (
    MULTIMODAL_PATH,
    asr_body,
    audio_ref,
    decode_data_url,
    json_response,
    parameters,
)
from gateway.dashscope.errors import DashScopeError, native_error
from gateway.dashscope.sse import sse_event
from gateway.sim.admission import Call, admit
from gateway.sim.audio_codec import audio_duration, wav_file
from gateway.sim.capabilities import capabilities
from gateway.sim.http_common import SimStream, cut_error_event, sleep_ms
from gateway.sim.models import HTTP_ASR_PREFIXES, HTTP_TTS_PREFIXES
from gateway.sim.qwen_voice_enrollment import VOICE_PREFIX as QWEN_CLONE_PREFIX
from gateway.sim.state import SimState
from gateway.sim.text import default_transcript, strip_markup, tokens
from gateway.sim.vl_chat import vl_chat
from gateway.sim.voice import synthesize
from gateway.sim.voice_enrollment import is_enrolled, synthesis_refusal

PATH = MULTIMODAL_PATH
QWEN_TTS_RATE = 24000
PCM_CHUNK_S = 0.1


def _is_speech_model(model: str) -> bool:
    return model.startswith(HTTP_ASR_PREFIXES + HTTP_TTS_PREFIXES)


def _service_of(model: str | None) -> str:
    if model and model.startswith(HTTP_TTS_PREFIXES):
        return "tts"
    if model and model.startswith(HTTP_ASR_PREFIXES):
        return "asr"
    return "generation"


def _redact(body: dict[str, Any]) -> Any:
    """Copy of the body with data-URL audio replaced by a size note (keeps the request log small)."""

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, str) and value.startswith("data:") and len(value) > 256:
            head = value.split(",", 1)[0]
            return f"{head},<{len(value) - len(head) - 1} base64 chars elided>"
        return value

    return walk(body)


def _load_audio(state: SimState, ref: str) -> tuple[bytes, str | None]:
    """Audio bytes and a format hint from a data URL or a ``/sim/audio/`` URL of this simulator."""
    if ref.startswith("data:"):
        return decode_data_url(ref)
    path = urlparse(ref).path
    if path.startswith("/sim/audio/"):
        stored = state.audio.get(path.rsplit("/", 1)[-1])
        if stored is not None:
            return stored[0], path.rsplit(".", 1)[-1]
    raise DashScopeError(
        415, "BadRequest.InputDownloadFailed", f"Failed to download the input audio: {ref[:120]}"
    )


async def multimodal_generation(request: Request) -> Response:
    state: SimState = request.app.state.sim

    def model_ok(model: str) -> bool:
        return _is_speech_model(model) or capabilities(model, state.config.model_capabilities).vision

    call = await admit(request, state, _service_of, model_ok, native_error, redact=_redact)
    if isinstance(call, Response):
        return call
    try:
        if call.model.startswith(HTTP_TTS_PREFIXES):
            return await _tts(call, state, request)
        if call.model.startswith(HTTP_ASR_PREFIXES):
            return await _asr(call, state)
        return await vl_chat(call, state)
    except DashScopeError as exc:
        call.record["status"] = exc.status
        return native_error(exc.status, exc.code, exc.message, call.request_id)


async def _asr(call: Call, state: SimState) -> Response:
    data, fmt = _load_audio(state, audio_ref(call.body))
    try:
        duration = await asyncio.to_thread(audio_duration, data, fmt)
    except ValueError as exc:
        raise DashScopeError(415, "BadRequest.UnsupportedFileFormat", str(exc)) from exc
    transcript = state.config.asr_transcript
    if transcript is None:
        transcript = default_transcript(duration)
    await sleep_ms(state.config.asr_delay_ms)
    words = tokens(transcript)

    seconds = max(1, math.ceil(duration))

    def body(text: str, finish: str, n_out: int) -> dict[str, Any]:
        return asr_body(call.request_id, text, finish, n_out, seconds, "en")

    if not call.stream:
        return json_response(body(transcript, "stop", len(words)))
    params = parameters(call.body)
    incremental = params.get("incremental_output") is True

    async def events() -> AsyncIterator[bytes]:
        text = ""
        for i, word in enumerate(words):
            text += word
            yield sse_event(i + 1, body(word if incremental else text, "null", i + 1))
        yield sse_event(len(words) + 1, body("" if incremental else text, "stop", len(words)))

    return _sse(call, events)


async def _tts(call: Call, state: SimState, request: Request) -> Response:
    data = call.body.get("input") if isinstance(call.body.get("input"), dict) else {}
    text = data.get("text")
    if not isinstance(text, str) or not text.strip():
        raise DashScopeError(400, "InvalidParameter", "input.text must be a non-empty string.")
    voice = data.get("voice")
    if isinstance(voice, str):  # a cloned voice speaks only while enrolled, for its own model
        refusal = synthesis_refusal(state, voice, call.model)
        if refusal is None and voice.startswith(QWEN_CLONE_PREFIX) and not is_enrolled(state, voice):
            refusal = f"voice '{voice[:64]}' does not exist"
        if refusal is not None:
            raise DashScopeError(400, "InvalidParameter", refusal)
    speech = await asyncio.to_thread(synthesize, strip_markup(text), QWEN_TTS_RATE)
    wav = await asyncio.to_thread(wav_file, speech.pcm, QWEN_TTS_RATE)
    name = state.audio.put(wav, "audio/wav", "wav")
    base = state.config.public_url or f"{request.url.scheme}://{request.headers.get('host', 'localhost')}"
    expires = int(time.time()) + 86400
    audio_final = {
        "data": "",
        "url": f"{base}/sim/audio/{name}",
        "id": f"audio_{call.request_id}",
        "expires_at": expires,
    }
    usage = {"characters": len(text)}
    config = state.config
    if not call.stream:
        await sleep_ms(config.tts_first_chunk_ms)
        output = {"finish_reason": "stop", "audio": audio_final}
        return json_response({"request_id": call.request_id, "output": output, "usage": usage})

    step = int(QWEN_TTS_RATE * PCM_CHUNK_S)
    chunks = [speech.pcm[i : i + step] for i in range(0, len(speech.pcm), step)]

    async def events() -> AsyncIterator[bytes]:
        for i, pcm in enumerate(chunks):
            await sleep_ms(config.tts_first_chunk_ms if i == 0 else config.tts_chunk_delay_ms)
            audio = {"data": base64.b64encode(pcm.tobytes()).decode(), "id": f"audio_{call.request_id}"}
            output = {"finish_reason": "null", "audio": audio}
            yield sse_event(i + 1, {"request_id": call.request_id, "output": output, "usage": usage})
        output = {"finish_reason": "stop", "audio": audio_final}
        yield sse_event(len(chunks) + 1, {"request_id": call.request_id, "output": output, "usage": usage})

    return _sse(call, events)


def _sse(call: Call, events: Any) -> Response:
    fault = call.fault
    error_chunk = cut_error_event(fault, call.request_id)
    return SimStream(events, cut_after=fault.cut_after if fault else None, error_chunk=error_chunk)
