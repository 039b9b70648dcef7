"""``POST /v1/audio/transcriptions`` (multipart upload) and ``POST /v1/audio/speech`` (streamed audio).

Uploads are counted while they arrive and refused with 413 past ``max_upload_bytes``; the
file is decoded from any container/codec FFmpeg reads. Speech is streamed: the response
starts once the first PCM piece is synthesised, encoded incrementally into the requested
format. Text longer than ``max_tts_chars`` is refused (400, limit in the message) rather
than split, so one request is always one utterance with one voice and prosody.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse, Response, StreamingResponse
from pydantic import ValidationError
from starlette.datastructures import FormData, UploadFile

from gateway import response_cache
from gateway.audio import CONTENT_TYPES, AudioDecodeError, StreamEncoder, run_in_codec_pool
from gateway.auth import Principal, require_scope
from gateway.context import get_context
from gateway.conversation.emotion import MODES, decide, voice_params
from gateway.costs import charge_quota
from gateway.errors import APIError, no_provider_error, refuse_unknown_model
from gateway.inputs.audio import decode_upload
from gateway.inputs.echo import echo
from gateway.schemas import (
    SpeechRequest,
    TranscriptionForm,
    parse_json_body,
    read_body,
    read_form,
    too_large,
    validate,
)
from gateway.services import Services
from gateway.usage import record
from gateway.voices.use import cloned_voice, record_use, store_for
from lipsync.labels import MediaLabel
from policies.routing import StreamInterrupted, UnknownModelError
from providers.base import (
    ProviderError,
    Segment,
    SpeechChunk,
    SynthesizeRequest,
    TranscribeRequest,
    Transcript,
)

log = logging.getLogger("talkgate.audio")
router = APIRouter()

#: Sample rate handed to ASR providers (Paraformer and Whisper both work at 16 kHz).
ASR_SAMPLE_RATE = 16000
#: The request's speed bounds (SpeechRequest): an emotion's rate keeps the product within them.
MIN_SPEED, MAX_SPEED = 0.25, 4.0


# --------------------------------------------------------------------------- transcription


def _form_fields(form: FormData) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            continue
        name = key.removesuffix("[]")
        if name == "timestamp_granularities":
            fields.setdefault(name, []).append(value)
        else:
            fields[name] = value
    return fields


async def _read_upload(form: FormData, limit: int) -> bytes:
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise RequestValidationError(
            [
                {
                    "loc": ("body", "file"),
                    "msg": "Field required: the audio file to transcribe",
                    "type": "missing",
                }
            ]
        )
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise too_large(limit)
    return data


def transcript_segments(transcript: Transcript, duration: float) -> list[Segment]:
    """The provider's segments, or one segment spanning the audio when it gave none."""
    if transcript.segments:
        return transcript.segments
    return [Segment(id=0, start=0.0, end=duration, text=transcript.text)]


def _timestamp(seconds: float, sep: str) -> str:
    ms = max(0, round(seconds * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def to_srt(segments: list[Segment]) -> str:
    cues = [
        f"{i}\n{_timestamp(s.start, ',')} --> {_timestamp(s.end, ',')}\n{s.text.strip()}\n"
        for i, s in enumerate(segments, 1)
    ]
    return "\n".join(cues)


def to_vtt(segments: list[Segment]) -> str:
    cues = [f"{_timestamp(s.start, '.')} --> {_timestamp(s.end, '.')}\n{s.text.strip()}\n" for s in segments]
    return "WEBVTT\n\n" + "\n".join(cues)


def transcription_response(transcript: Transcript, audio_s: float, form: TranscriptionForm) -> Response:
    fmt = form.response_format
    if fmt == "json":
        return Response(orjson.dumps({"text": transcript.text}), media_type="application/json")
    if fmt == "text":
        return PlainTextResponse(transcript.text + "\n")
    duration = transcript.duration_s or audio_s
    segments = transcript_segments(transcript, duration)
    if fmt == "srt":
        return PlainTextResponse(to_srt(segments))
    if fmt == "vtt":
        return Response(to_vtt(segments), media_type="text/vtt; charset=utf-8")
    granularities = set(form.timestamp_granularities) or {"segment"}
    body: dict[str, Any] = {
        "task": "transcribe",
        "language": transcript.language or form.language or "",
        "duration": round(duration, 3),
        "text": transcript.text,
    }
    if "segment" in granularities:
        body["segments"] = [
            {
                "id": s.id,
                "seek": 0,
                "start": round(s.start, 3),
                "end": round(s.end, 3),
                "text": s.text,
                "tokens": [],
                "temperature": form.temperature or 0.0,
                "avg_logprob": 0.0,
                "compression_ratio": 0.0,
                "no_speech_prob": 0.0,
            }
            for s in segments
        ]
    if "word" in granularities:
        body["words"] = [
            {"word": w.text, "start": round(w.start, 3), "end": round(w.end, 3)}
            for s in transcript.segments
            for w in s.words
        ]
    return Response(orjson.dumps(body), media_type="application/json")


@router.post("/v1/audio/transcriptions")
async def transcriptions(request: Request, principal: Principal = require_scope("asr")) -> Response:
    try:
        return await _transcriptions(request, principal)
    except UnknownModelError as exc:
        raise refuse_unknown_model(request, exc) from None


async def _transcriptions(request: Request, principal: Principal) -> Response:
    services: Services = request.app.state.services
    limit = services.settings.max_upload_bytes
    form = await read_form(request, limit, "a 'file' field", max_files=1)
    try:
        data = await _read_upload(form, limit)
        fields = _form_fields(form)
    finally:
        await form.close()
    try:
        params = TranscriptionForm.model_validate(fields)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False, include_context=False)) from None
    if params.timestamp_granularities and params.response_format != "verbose_json":
        raise APIError(
            400,
            "timestamp_granularities requires response_format 'verbose_json'.",
            param="timestamp_granularities",
        )
    get_context(request).model = params.model
    plan = await response_cache.transcription_plan(request, data, params)
    if plan is not None and (hit := await plan.get()) is not None:
        return response_cache.cached_response(request, hit)
    try:
        audio = await decode_upload(data, ASR_SAMPLE_RATE, services.settings.limits, "transcription")
    except AudioDecodeError as exc:
        raise APIError(400, str(exc), code="invalid_audio", param="file") from None
    await charge_quota(request, principal, {"asr_seconds": audio.duration_s})
    extra: dict[str, Any] = {}
    if params.temperature is not None:
        extra["temperature"] = params.temperature
    if "word" in params.timestamp_granularities:
        extra["word_timestamps"] = True
    asr_request = TranscribeRequest(
        model=params.model, audio=audio, language=params.language, prompt=params.prompt, extra=extra
    )
    ctx = get_context(request)
    if services.experiments is not None:  # A/B: may change the model, sets ctx.variant
        asr_request = services.experiments.apply("asr", ctx, asr_request)
    try:
        transcript = await services.router.transcribe(asr_request, ctx)
    except ProviderError as exc:
        raise no_provider_error(services, "asr", exc) from None
    record(request, audio_seconds=audio.duration_s)
    response = transcription_response(transcript, audio.duration_s, params)
    if response_cache.storable(plan, ctx):
        assert plan is not None
        await plan.put(response_cache.response_entry(response, ctx))
    return response


# --------------------------------------------------------------------------- speech


def build_speech_request(
    body: SpeechRequest, services: Services, emotion: tuple[str, str, str] | None = None
) -> SynthesizeRequest:
    """The provider request; ``emotion`` (``speech_emotion``) adds the emotion's voice parameters."""
    settings = services.settings
    if not body.input.strip():
        raise APIError(400, "input is empty: there is no text to speak.", param="input")
    if len(body.input) > settings.max_tts_chars:
        raise APIError(
            400,
            f"input is {len(body.input)} characters long, above the limit of {settings.max_tts_chars} "
            "characters per request; split the text into several requests.",
            param="input",
            code="input_too_long",
        )
    voice = body.voice or settings.voices.default
    voice = settings.voices.aliases.get(voice, voice)
    text, extra = body.input, dict[str, Any]()
    if emotion is not None:  # the spoken answer's mapping per backend (and its tag, in "auto")
        emotion_name, _, text = emotion
        if not text.strip():
            raise APIError(400, "input has nothing to speak after its emotion tag.", param="input")
        extra = dict(voice_params(emotion_name))
    speed = min(MAX_SPEED, max(MIN_SPEED, body.speed * float(extra.get("speed", 1.0))))
    if body.instructions:
        extra["instructions"] = body.instructions
    return SynthesizeRequest(model=body.model, text=text, voice=voice, speed=speed, extra=extra)


def speech_emotion(body: SpeechRequest, settings: Any) -> tuple[str, str, str] | None:
    """(emotion, source, text) for ``body.emotion``, or None when no emotion applies (absent,
    "off", or turned off for everyone); 400 for a value outside emotion.MODES."""
    if body.emotion is None:
        return None
    if body.emotion not in MODES:
        raise APIError(
            400,
            f"emotion must be one of {', '.join(MODES)}; got '{echo(body.emotion)}'.",
            param="emotion",
            code="invalid_value",
        )
    if body.emotion == "off" or not settings.emotion.enabled:
        return None
    return decide(body.emotion, body.input)


async def encode_speech(
    first: SpeechChunk, rest: AsyncIterator[SpeechChunk], encoder: StreamEncoder
) -> AsyncIterator[bytes]:
    """Encode PCM pieces as they arrive. A mid-stream failure aborts the connection.

    Audio has no in-band error event, and a cleanly ended file would pass for a complete
    answer; aborting leaves the client with a truncated-transfer error instead.
    """
    # PCM and WAV are byte copies; real codecs run on the codec pool.
    in_pool = encoder.format not in ("pcm", "wav")
    chunk: SpeechChunk | None = first
    try:
        while chunk is not None:
            if chunk.sample_rate != encoder.input_rate:
                raise RuntimeError(
                    f"provider changed sample rate mid-stream ({encoder.input_rate} -> {chunk.sample_rate})"
                )
            if chunk.pcm:
                out = await run_in_codec_pool(encoder.feed, chunk.pcm) if in_pool else encoder.feed(chunk.pcm)
                if out:
                    yield out
            chunk = await anext(rest, None)
        tail = await run_in_codec_pool(encoder.finish) if in_pool else encoder.finish()
        if tail:
            yield tail
    except StreamInterrupted as exc:
        log.warning("speech stream interrupted after first byte; aborting the response: %r", exc.cause)
        raise
    finally:
        encoder.close()
        aclose = getattr(rest, "aclose", None)
        if aclose is not None:
            await aclose()


@router.post("/v1/audio/speech")
async def speech(request: Request, principal: Principal = require_scope("tts")) -> Response:
    try:
        return await _speech(request, principal)
    except UnknownModelError as exc:  # before the first byte: the chain is resolved first
        raise refuse_unknown_model(request, exc) from None


async def _speech(request: Request, principal: Principal) -> Response:
    services: Services = request.app.state.services
    body: SpeechRequest = validate(
        SpeechRequest, parse_json_body(await read_body(request, services.settings.max_upload_bytes))
    )
    emotion = speech_emotion(body, services.settings)
    tts_request = build_speech_request(body, services, emotion)
    ctx = get_context(request)
    ctx.model = body.model
    cloned = await cloned_voice(services, principal.tenant, body.voice)  # "custom:<id>": 404 / 403
    if cloned is not None:  # its own model and voice id; no A/B, no cache (every use is audited)
        tts_request = replace(tts_request, model=cloned.target_model, voice=cloned.provider_voice_id)
    elif services.experiments is not None:  # A/B: may change model / voice, sets ctx.variant
        tts_request = services.experiments.apply("tts", ctx, tts_request)
    plan = response_cache.speech_plan(request, body, tts_request) if cloned is None else None
    if plan is not None and (hit := await plan.get()) is not None:
        return response_cache.speech_hit_response(request, hit)
    skip = cloned.skip_for() if cloned is not None else None
    try:
        stream = await services.router.synthesize_stream(tts_request, ctx, skip=skip)
        first = await anext(stream)  # already in hand: the router returns after the first piece
    except ProviderError as exc:
        raise no_provider_error(services, "tts", exc) from None
    record(request, characters=len(tts_request.text))
    label = MediaLabel(services.settings.media_labels.producer, cloned.consent_id if cloned else None)
    encoder = StreamEncoder(body.response_format, first.sample_rate, label)
    headers = {
        "x-talkgate-sample-rate": str(encoder.output_rate),
        "content-disposition": f'inline; filename="speech.{body.response_format}"',
        **label.headers(),
    }
    if emotion is not None:
        headers["x-talkgate-emotion"] = f"{emotion[0]}; source={emotion[1]}"
    if cloned is not None:
        headers["x-talkgate-voice-fallback"] = "local" if ctx.fallback else "none"
        await record_use(
            store_for(services),
            cloned,
            route="speech",
            text=tts_request.text,
            key_id=principal.key_id,
            ctx=ctx,
        )
    media_type = CONTENT_TYPES[body.response_format]
    audio = response_cache.tee_into_cache(
        encode_speech(first, stream, encoder), plan, media_type, headers, ctx
    )
    return StreamingResponse(audio, media_type=media_type, headers=headers)
