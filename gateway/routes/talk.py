"""``POST /v1/talk``: a spoken, lip-synced answer from a portrait; ``GET /v1/talk/artifacts/{name}``.

Input is JSON (``audio``/``image`` as base64 or data URLs) or multipart (``audio`` and
``image`` as files). Exactly one of ``text``/``audio`` and one of ``avatar_id``/``image``.
With ``Accept: video/mp4`` the MP4 itself is the answer; otherwise a JSON document with
the transcript, the reply, stage timings and URLs of the MP4 and WAV artifacts.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Literal

import anyio
import orjson
from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import UploadFile

from gateway.audio import AudioDecodeError
from gateway.auth import Principal, require_scope
from gateway.context import get_context
from gateway.conversation.knowledge import (
    KnowledgeScopeError,
    KnowledgeSpecError,
    ground_turn,
    parse_turn_spec,
)
from gateway.conversation.memory import ConversationMemory
from gateway.conversation.turn import TalkError, TalkInput, TalkPipeline, TalkResult
from gateway.costs import charge_quota
from gateway.errors import APIError, refuse_unknown_model
from gateway.inputs.audio import decode_upload
from gateway.inputs.data_url import DataUrlError, decode_data_url
from gateway.inputs.echo import echo
from gateway.inputs.hosts import public_url
from gateway.inputs.images import check_image
from gateway.knowledge.api import not_found
from gateway.knowledge.service import NotFound
from gateway.knowledge_chat import scope_error
from gateway.routes.avatars import json_response, lipsync_error, parse_face_index, read_form
from gateway.schemas import parse_json_body, read_body, too_large, validate
from gateway.services import Services
from gateway.usage import record as record_usage
from gateway.voices.use import cloned_voice, record_use, store_for
from lipsync.avatars import Avatar
from lipsync.errors import FaceError, ImageError, LipsyncError
from lipsync.labels import MediaLabel
from policies.routing import UnknownModelError

log = logging.getLogger("talkgate.talk")
router = APIRouter()

MAX_TEXT_CHARS = 4000


class TalkBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    text: str | None = None
    audio: str | None = None  # JSON: base64 or data URL
    avatar_id: str | None = Field(default=None, max_length=256)
    image: str | None = None  # JSON: base64 or data URL
    face_index: int | None = Field(default=None, ge=0)
    voice: str | None = Field(default=None, max_length=256)
    system_prompt: str | None = Field(default=None, max_length=4000)
    conversation_id: str | None = Field(default=None, max_length=128)
    model: str | None = Field(default=None, max_length=256)
    language: str | None = Field(default=None, max_length=64)
    max_tokens: int | None = Field(default=None, ge=1, le=1024)
    #: ``{"vector_store_ids": [...], "max_num_results": 5}``: ground the answer (multipart: JSON text)
    knowledge: dict[str, Any] | str | None = None
    #: "auto" (the LLM's tag, else a lexicon), "off", or one of neutral/happy/sad/angry/surprised/gentle
    emotion: Literal["auto", "off", "neutral", "happy", "sad", "angry", "surprised", "gentle"] = "auto"


def _b64(value: str, field: str) -> bytes:
    try:
        return decode_data_url(value, allow_bare=True).data
    except DataUrlError as exc:
        raise APIError(400, f"'{field}' must be base64 (or a base64 data: URL): {exc}", param=field) from None


async def _read_request(request: Request, limit: int) -> tuple[TalkBody, bytes | None, bytes | None]:
    """(fields, audio bytes, image bytes) from a JSON or multipart body."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        form = await read_form(
            request, limit, "'text' or an 'audio' file, and 'avatar_id' or an 'image' file"
        )
        try:
            fields: dict[str, Any] = {}
            files: dict[str, bytes] = {}
            for key, value in form.multi_items():
                if isinstance(value, UploadFile):
                    data = await value.read(limit + 1)
                    if len(data) > limit:
                        raise too_large(limit)
                    files[key] = data
                else:
                    fields[key] = value
        finally:
            await form.close()
        if "face_index" in fields:
            fields["face_index"] = parse_face_index(fields["face_index"])
        fields = {k: v for k, v in fields.items() if k not in ("audio", "image") and v != ""}
        try:
            body = TalkBody.model_validate(fields)
        except ValidationError as exc:
            raise RequestValidationError(exc.errors(include_url=False, include_context=False)) from None
        return body, files.get("audio"), files.get("image")
    body = validate(TalkBody, parse_json_body(await read_body(request, limit)))
    audio = _b64(body.audio, "audio") if body.audio else None
    image = _b64(body.image, "image") if body.image else None
    return body, audio, image


def _check_choices(body: TalkBody, audio: bytes | None, image: bytes | None) -> None:
    if body.text is not None and audio is not None:
        raise APIError(400, "send either 'text' or 'audio', not both", param="text")
    if body.text is None and audio is None:
        raise APIError(400, "'text' or 'audio' is required", param="text", code="missing_input")
    if body.text is not None:
        if not body.text.strip():
            raise APIError(400, "text is empty: there is nothing to answer", param="text", code="empty_text")
        if len(body.text) > MAX_TEXT_CHARS:
            raise APIError(400, f"text is longer than {MAX_TEXT_CHARS} characters", param="text")
    if audio is not None and not audio:
        raise APIError(400, "audio is empty", param="audio", code="invalid_audio")
    if body.avatar_id and image is not None:
        raise APIError(400, "send either 'avatar_id' or 'image', not both", param="avatar_id")
    if not body.avatar_id and image is None:
        raise APIError(400, "'avatar_id' or 'image' is required", param="avatar_id", code="missing_avatar")


async def _avatar(services: Services, body: TalkBody, image: bytes | None, tenant: str) -> Avatar:
    if image is not None:
        try:
            check_image(image, services.settings.limits)  # from the header, before any decoding
            return await anyio.to_thread.run_sync(services.avatars.prepare, image, body.face_index)
        except (FaceError, ImageError) as exc:
            raise lipsync_error(exc) from None
    assert body.avatar_id is not None
    avatar = await anyio.to_thread.run_sync(services.avatars.get, body.avatar_id, tenant)
    if avatar is None:
        raise APIError(
            404,
            f"No avatar with id '{echo(body.avatar_id)}'",
            type="not_found_error",
            code="avatar_not_found",
            param="avatar_id",
        )
    return avatar


def _memory(request: Request) -> ConversationMemory:
    memory = getattr(request.app.state, "talk_memory", None)
    if memory is None:
        memory = request.app.state.talk_memory = ConversationMemory()
    return memory


def _grounder(services: Services, principal: Principal, body: TalkBody, request: Request) -> Any:
    """The turn's knowledge grounding (None: the request names no stores and neither its key nor
    its tenant has a default); a bad ``knowledge`` is a 400, stores named by a key without
    knowledge:read a 403, a store of another tenant a 404."""
    raw = body.knowledge
    if isinstance(raw, str):
        try:
            raw = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise APIError(400, "knowledge must be a JSON object.", param="knowledge") from None
    try:
        spec = parse_turn_spec(raw, principal)
    except KnowledgeSpecError as exc:
        raise APIError(400, str(exc), param=exc.param) from None
    except KnowledgeScopeError as exc:
        raise scope_error(exc) from None
    if spec is not None and spec["vector_store_ids"] and services.retriever is None:
        raise APIError(503, "The knowledge base is not enabled on this gateway.", code="knowledge_disabled")
    ctx = get_context(request)

    async def ground(messages: list[dict[str, Any]]) -> Any:
        try:
            return await ground_turn(
                services.retriever, services.settings, principal.tenant, spec, messages, ctx, principal
            )
        except NotFound as exc:
            raise not_found(exc) from None

    return ground


def _wants_video(request: Request) -> bool:
    return "video/mp4" in request.headers.get("accept", "").lower()


@router.post("/v1/talk")
async def talk(request: Request, principal: Principal = require_scope("talk")) -> Response:
    services: Services = request.app.state.services
    settings = services.settings
    body, audio_bytes, image = await _read_request(request, settings.max_upload_bytes)
    _check_choices(body, audio_bytes, image)
    ctx = get_context(request)
    ctx.model = body.model or "default"  # the chat model asked for ("default": the chat chain)
    # Everything from here to the response body is media work (face preparation, decoding, model
    # calls, rendering, encoding), not gateway overhead: counted into ctx.work_s, see _MediaWork.
    with _MediaWork(ctx):
        try:
            return await _answer(request, services, principal, body, audio_bytes, image)
        except UnknownModelError as exc:  # booked as one label, never the client's string
            raise refuse_unknown_model(request, exc) from None


class _MediaWork:
    """Adds the wall time of a block to ``ctx.work_s`` minus the provider time already counted
    in ``ctx.upstream_s`` during it, so that x-talkgate-overhead-ms on /v1/talk measures only the
    gateway's own work (parsing, auth, limits, routing, serialisation)."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    def __enter__(self) -> None:
        self.started = time.perf_counter()
        self.upstream_s = self.ctx.upstream_s

    def __exit__(self, *exc: object) -> None:
        wall = time.perf_counter() - self.started
        self.ctx.work_s += max(0.0, wall - (self.ctx.upstream_s - self.upstream_s))


async def _answer(
    request: Request,
    services: Services,
    principal: Principal,
    body: TalkBody,
    audio_bytes: bytes | None,
    image: bytes | None,
) -> Response:
    settings = services.settings
    avatar = await _avatar(services, body, image, principal.tenant)
    audio = None
    if audio_bytes is not None:
        try:
            audio = await decode_upload(audio_bytes, 16000, settings.limits, "talk")
        except AudioDecodeError as exc:
            raise APIError(400, str(exc), code="invalid_audio", param="audio") from None
        await charge_quota(request, principal, {"asr_seconds": audio.duration_s})
    voice = body.voice or settings.voices.default
    voice = settings.voices.aliases.get(voice, voice)
    cloned = await cloned_voice(services, principal.tenant, body.voice)  # "custom:<id>": 404 / 403
    label = MediaLabel(settings.media_labels.producer, cloned.consent_id if cloned else None)
    memory = _memory(request)
    renders = services.renderer
    stem = renders.artifacts.new_stem()
    video_path = renders.artifacts.path_for(f"{stem}.mp4", principal.tenant)
    pipeline = TalkPipeline(
        services.router,
        renders,
        get_context(request),
        video_path,
        _grounder(services, principal, body, request),
    )
    inp = TalkInput(
        avatar=avatar,
        voice=voice,
        text=body.text,
        audio=audio,
        system_prompt=body.system_prompt,
        history=memory.history(principal.tenant, body.conversation_id),
        model=body.model or "",
        language=body.language,
        max_tokens=body.max_tokens or 256,
        emotion=body.emotion if settings.emotion.enabled else "off",
        label=label,
        visible_mark=settings.media_labels.visible_video_mark,
    )
    if cloned is not None:
        inp.voice, inp.voice_model, inp.tts_skip = (
            cloned.provider_voice_id,
            cloned.target_model,
            cloned.skip_for(),
        )
    try:
        result = await pipeline.run(inp)
    except TalkError as exc:
        raise APIError(exc.status, exc.message, code=exc.code, param=exc.param) from None
    except (FaceError, ImageError) as exc:
        raise lipsync_error(exc) from None
    except LipsyncError as exc:
        raise APIError(
            500, f"rendering failed: {exc.message}", type="server_error", code=exc.reason
        ) from None
    memory.append(principal.tenant, body.conversation_id, result.transcript, result.reply)
    record_usage(
        request,
        tokens_in=result.tokens_in,
        tokens_out=result.tokens_out,
        characters=result.tts_chars,
        audio_seconds=result.asr_seconds,
        video_seconds=result.duration_s,
    )
    if services.metrics is not None:
        frames = round(result.duration_s * settings.lipsync.fps)
        services.metrics.observe_talk(result.timings, frames, result.renderer)
    headers = {
        "x-talkgate-renderer": result.renderer,
        "x-talkgate-first-video-ms": str(result.timings["first_video_ms"]),
        "x-talkgate-duration-s": str(result.duration_s),
        "x-talkgate-emotion": f"{result.emotion}; source={result.emotion_source}",
        **label.headers(),
    }
    if result.renderer_fallback is not None:
        headers["x-talkgate-renderer-fallback"] = (
            "wav2lip failed: " + result.renderer_fallback[:200].encode("ascii", "replace").decode()
        )
    if cloned is not None:
        headers["x-talkgate-voice-fallback"] = (
            "local" if result.fallback and "local" in result.providers.get("tts", "") else "none"
        )
        store = store_for(services)
        assert store is not None
        await record_use(
            store, cloned, route="talk", text=result.reply, key_id=principal.key_id, ctx=get_context(request)
        )
    if _wants_video(request):
        data = await anyio.Path(video_path).read_bytes()
        await anyio.Path(video_path).unlink(missing_ok=True)
        return Response(data, media_type="video/mp4", headers=headers)
    wav_name = f"{stem}.wav"
    await anyio.Path(renders.artifacts.path_for(wav_name, principal.tenant)).write_bytes(result.wav)
    return json_response(_json(request, result, stem), headers=headers)


def _json(request: Request, result: TalkResult, stem: str) -> dict[str, Any]:
    return {
        "object": "talk",
        "transcript": result.transcript,
        "reply": result.reply,
        "sentences": result.sentences,
        "timings": result.timings,
        "render_stages_ms": result.render_stages,
        "renderer": result.renderer,
        "renderer_fallback": result.renderer_fallback,
        "providers": result.providers,
        "fallback": result.fallback,
        **(result.knowledge or {}),
        # From the configured public base URL, never from the Host header (gateway/inputs/hosts.py).
        "audio_url": _artifact_url(request, f"{stem}.wav"),
        "video_url": _artifact_url(request, f"{stem}.mp4"),
        "duration_s": result.duration_s,
        "emotion": result.emotion,
        "emotion_source": result.emotion_source,
    }


def _artifact_url(request: Request, name: str) -> str:
    base = request.app.state.settings.public_base_url
    return public_url(base, request.app.url_path_for("talk_artifact", name=name))


@router.get("/v1/talk/artifacts/{name}", name="talk_artifact")
async def talk_artifact(
    name: str, request: Request, principal: Principal = require_scope("talk")
) -> Response:
    artifacts = request.app.state.services.renderer.artifacts
    path = artifacts.lookup(name, principal.tenant)  # another tenant's artifact is "unknown"
    if path is None:
        raise APIError(
            404,
            f"No artifact '{name}' (unknown or expired)",
            type="not_found_error",
            code="artifact_not_found",
        )
    return FileResponse(path, media_type=artifacts.media_type(name))
