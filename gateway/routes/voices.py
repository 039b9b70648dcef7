"""``/v1/voices``: cloned voices with recorded consent (scope ``voices``), and the auditor's export.

Thin: uploads go through the shared checks (``read_form`` counts the body, ``decode_upload``
bounds the duration per surface "voices"); the work is in gateway/voices/.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from starlette.datastructures import FormData, UploadFile

from gateway.audio import AudioDecodeError
from gateway.auth import Principal, require_admin, require_scope
from gateway.context import get_context
from gateway.costs import charge_quota
from gateway.csv_safe import write_csv
from gateway.errors import APIError, no_provider_error
from gateway.inputs.audio import decode_upload
from gateway.jsonresponse import OrjsonResponse
from gateway.schemas import read_form, too_large
from gateway.services import Services
from gateway.usage import record
from gateway.voices import enrolment
from gateway.voices.enrolment import FALLBACKS, EnrolmentRefused, Recording
from gateway.voices.provider import EnrollmentClient, EnrollmentError, client_for
from gateway.voices.store import (
    AUDIT_COLUMNS,
    CONSENT_COLUMNS,
    VoiceStore,
    audit_row,
    consent_record,
    iso,
    now,
)
from gateway.voices.use import store_for
from providers.base import ProviderError

router = APIRouter()

Purpose = Annotated[str, Query(min_length=3, max_length=200, pattern=r"^[^\x00-\x1f<>{}]+$")]


def voice_store(services: Services) -> VoiceStore:
    store = store_for(services)
    if store is None:
        raise APIError(
            503, "voice cloning needs the database (SaaS layer) to be configured", code="voices_unavailable"
        )
    return store


def enrollment_client(services: Services, target_model: str) -> EnrollmentClient:
    """CosyVoice or Qwen-TTS enrollment (by the voice's target model) over the cloud client."""
    return client_for(target_model, services.dashscope)


def _refused(exc: EnrolmentRefused) -> APIError:
    return APIError(exc.status, exc.message, code=exc.code, param=exc.param)


def view(voice: Any) -> dict[str, Any]:
    return {
        "id": voice.id,
        "object": "voice",
        "voice": f"custom:{voice.id}",
        "name": voice.name,
        "status": voice.status,
        "provider_status": voice.provider_status,
        "target_model": voice.target_model,
        "fallback": voice.fallback,
        "consent_id": voice.id,
        "created_at": iso(voice.created_at),
        "ready_at": iso(voice.ready_at),
        "revoked_at": iso(voice.revoked_at),
        "use_count": voice.use_count,
    }


@router.get("/v1/voices/consent")
async def consent_statement(
    request: Request,
    purpose: Purpose,
    language: Literal["en", "zh"] = "en",
    speaker: Annotated[str, Query(max_length=60, pattern=r"^[^\x00-\x1f<>{}]*$")] = "",
    principal: Principal = require_scope("voices"),
) -> Any:
    """A consent statement with a one-time code naming this tenant and ``purpose``; read it aloud."""
    services: Services = request.app.state.services
    try:
        return await enrolment.issue_statement(
            voice_store(services), services.settings.voice_cloning, tenant=principal.tenant,
            key_id=principal.key_id, purpose=purpose, language=language, speaker=speaker,
        )  # fmt: skip
    except EnrolmentRefused as exc:
        raise _refused(exc) from None


async def _upload(form: FormData, name: str, limit: int) -> bytes:
    upload = form.get(name)
    if not isinstance(upload, UploadFile):
        raise APIError(400, f"the '{name}' recording is missing (multipart file field '{name}')", param=name)
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise too_large(limit)
    return data


async def _decoded(data: bytes, rate: int, services: Services, name: str) -> Recording:
    try:
        audio = await decode_upload(data, rate, services.settings.limits, "voices")
    except AudioDecodeError as exc:
        raise APIError(400, f"{name}: {exc}", code="invalid_audio", param=name) from None
    return Recording(data, audio)


def _text_field(form: FormData, name: str, default: str = "", max_len: int = 100) -> str:
    value = form.get(name, default)
    if not isinstance(value, str) or len(value) > max_len:
        raise APIError(400, f"'{name}' must be text of at most {max_len} characters", param=name)
    return value.strip()


class _AsrAccount:
    """The consent transcription on the tenant's ASR quota and this request's usage row, as
    /v1/audio/transcriptions does (``charge_quota`` before, ``record`` after)."""

    def __init__(self, request: Request, principal: Principal) -> None:
        self.request, self.principal = request, principal

    async def admit(self, seconds: float) -> None:
        await charge_quota(self.request, self.principal, {"asr_seconds": seconds})

    def book(self, seconds: float, provider: str | None) -> None:
        # the client named no model: book the one that transcribed ("bailian:paraformer-v2" → its name)
        model = provider.split(":", 1)[-1] if provider else None
        record(self.request, audio_seconds=seconds, provider=provider, model=model)


@router.post("/v1/voices")
async def create_voice(request: Request, principal: Principal = require_scope("voices")) -> Response:
    """Enrol a voice: multipart ``sample`` + ``consent`` recordings, ``code`` from the statement,
    optional ``name`` and ``fallback`` ("local" or "refuse")."""
    services: Services = request.app.state.services
    config = services.settings.voice_cloning
    limit = services.settings.max_upload_bytes
    form = await read_form(request, limit, "'sample' and 'consent' recordings", max_files=2)
    try:
        sample_bytes = await _upload(form, "sample", limit)
        consent_bytes = await _upload(form, "consent", limit)
        code = _text_field(form, "code", max_len=16)
        name = _text_field(form, "name")
        fallback = _text_field(form, "fallback", config.default_fallback, 16)
    finally:
        await form.close()
    if not code:
        raise APIError(400, "'code' is required: the one-time code of the consent statement", param="code")
    if fallback not in FALLBACKS:
        raise APIError(400, f"'fallback' must be one of {', '.join(FALLBACKS)}", param="fallback")
    sample = await _decoded(sample_bytes, enrolment.UPLOAD_RATE, services, "sample")
    consent = await _decoded(consent_bytes, enrolment.CHECK_RATE, services, "consent")
    try:
        voice, new = await enrolment.enrol(
            store=voice_store(services), client=enrollment_client(services, config.target_model), router=services.router,
            ctx=get_context(request), config=config, tenant=principal.tenant, key_id=principal.key_id,
            code=code, name=name, fallback=fallback, sample=sample, consent=consent,
            asr=_AsrAccount(request, principal),
        )  # fmt: skip
    except EnrolmentRefused as exc:
        raise _refused(exc) from None
    except ProviderError as exc:  # the ASR chain failed for the consent recording
        raise no_provider_error(services, "asr", exc) from None
    status = 201 if new else 200
    if voice.status == "pending":
        status = 202
    headers = {"x-talkgate-idempotent-replay": "false" if new else "true"}
    return OrjsonResponse(view(voice), status_code=status, headers=headers)


@router.get("/v1/voices")
async def list_voices(request: Request, principal: Principal = require_scope("voices")) -> Any:
    voices = await voice_store(request.app.state.services).list(principal.tenant)
    return {"object": "list", "data": [view(v) for v in voices]}


async def _own(request: Request, principal: Principal, voice_id: str) -> Any:
    voice = await voice_store(request.app.state.services).get(principal.tenant, voice_id)
    if voice is None:
        raise APIError(404, f"voice '{voice_id[:64]}' not found", code="voice_not_found")
    return voice


@router.get("/v1/voices/{voice_id}")
async def get_voice(request: Request, voice_id: str, principal: Principal = require_scope("voices")) -> Any:
    """The voice and its consent record; a voice under review is asked about at the provider."""
    services: Services = request.app.state.services
    voice = await _own(request, principal, voice_id)
    config = services.settings.voice_cloning
    await enrolment.refresh(
        voice_store(services),
        enrollment_client(services, voice.target_model),
        voice,
        principal.key_id,
        config.poll_interval_s,
        0.0,
    )
    return {**view(voice), "consent": consent_record(voice)}


@router.delete("/v1/voices/{voice_id}")
async def delete_voice(
    request: Request, voice_id: str, principal: Principal = require_scope("voices")
) -> Any:
    """Revoke: refused locally at once (before the provider is asked), then deleted at the provider."""
    services: Services = request.app.state.services
    store = voice_store(services)
    voice = await _own(request, principal, voice_id)
    if voice.status != "revoked":
        await store.set(
            voice, "revoke", {"reason": "deleted by the tenant"}, principal.key_id,
            status="revoked", revoked_at=now(), revocation_reason="deleted by the tenant",
        )  # fmt: skip
    deleted = voice.provider_voice_id is None
    if voice.provider_voice_id is not None and voice.provider_status != "DELETED":
        try:
            await enrollment_client(services, voice.target_model).delete(voice.provider_voice_id)
            deleted = True
        except EnrollmentError as exc:
            await store.set(voice, "provider_delete_failed", {"error": str(exc)}, principal.key_id)
        if deleted:
            await store.set(
                voice, "provider_delete", {"provider_voice_id": voice.provider_voice_id}, principal.key_id,
                provider_status="DELETED",
            )  # fmt: skip
    return {"id": voice.id, "object": "voice.deleted", "deleted": True, "provider_deleted": deleted}


# --------------------------------------------------------------------------- auditor export


def _export(columns: tuple[str, ...], rows: list[dict[str, Any]], fmt: str, name: str) -> Response:
    if fmt == "csv":
        flat = [
            {k: orjson.dumps(v).decode() if isinstance(v, dict | list) else v for k, v in r.items()}
            for r in rows
        ]
        return Response(
            write_csv(columns, flat),
            media_type="text/csv; charset=utf-8",
            headers={"content-disposition": f'attachment; filename="{name}.csv"'},
        )
    return OrjsonResponse({"object": "list", "data": rows})


@router.get("/admin/voices/consent")
async def export_consent(
    request: Request,
    tenant: str | None = None,
    format: Literal["json", "csv"] = "json",
    principal: Principal = require_admin,
) -> Response:
    """Every consent record (optionally of one tenant), for an auditor."""
    voices = await voice_store(request.app.state.services).list(tenant)
    return _export(CONSENT_COLUMNS, [consent_record(v) for v in voices], format, "voice-consent")


@router.get("/admin/voices/audit")
async def export_audit(
    request: Request,
    tenant: str | None = None,
    voice_id: str | None = None,
    format: Literal["json", "csv"] = "json",
    principal: Principal = require_admin,
) -> Response:
    """The voice audit log: enrolments, provider steps, every use, revocations."""
    events = await voice_store(request.app.state.services).audit(tenant, voice_id)
    return _export(AUDIT_COLUMNS, [audit_row(e) for e in events], format, "voice-audit")
