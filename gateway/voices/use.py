"""Speaking with a cloned voice: ``voice: "custom:<id>"`` resolved for one request.

The voice must belong to the caller's tenant (another tenant's id is "not found") and its
consent must stand (status ``active``): a revoked, failed or still-reviewed voice is refused
with 403 before any synthesis. The status is read from the database on each request, so a
revocation takes effect at once everywhere. The per-voice fallback policy says what happens when
the cloud TTS fails: "local" lets the router fall back to a local voice (the response is
flagged), "refuse" skips local targets so the request fails instead of speaking in another voice.

The realtime session (gateway/realtime/) uses the same three calls: ``resolve`` once at
``session.update`` (and again before each response, since consent may be revoked mid-session),
``synthesize_request`` / ``skip_for`` for each sentence, and ``record_use`` once per response.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.errors import APIError
from gateway.voices.store import VoiceStore

PREFIX = "custom:"


class VoiceRefused(Exception):
    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


@dataclass(frozen=True)
class ClonedVoice:
    id: str
    tenant: str
    provider_voice_id: str
    target_model: str
    fallback: str  # "local" | "refuse"
    consent_id: str
    row: Any

    def skip_for(self) -> Callable[[Any], str | None] | None:
        """The router ``skip`` hook for this voice's policy (None: every target may answer)."""
        if self.fallback == "local":
            return None
        return lambda target: (
            "the cloned voice's policy refuses a local fallback" if target.provider == "local" else None
        )


def is_custom(voice: str | None) -> bool:
    return bool(voice) and str(voice).startswith(PREFIX)


async def resolve(store: VoiceStore | None, tenant: str, voice: str) -> ClonedVoice:
    voice_id = voice[len(PREFIX) :]
    row = await store.get(tenant, voice_id) if store is not None and voice_id else None
    if row is None:
        raise VoiceRefused(404, f"voice '{voice[:64]}' not found", "voice_not_found")
    if row.status != "active" or not row.provider_voice_id:
        why = {
            "revoked": "its consent was revoked",
            "pending": "its enrolment is still under review",
            "failed": "its enrolment failed",
        }.get(row.status, f"its status is {row.status}")
        raise VoiceRefused(403, f"voice '{voice[:64]}' cannot be used: {why}", "voice_not_usable")
    return ClonedVoice(
        id=row.id, tenant=row.tenant, provider_voice_id=row.provider_voice_id, target_model=row.target_model,
        fallback=row.fallback, consent_id=row.id, row=row,
    )  # fmt: skip


async def record_use(
    store: VoiceStore, voice: ClonedVoice, *, route: str, text: str, key_id: str | None, ctx: Any
) -> None:
    detail = {
        "route": route,
        "characters": len(text),
        "text_sha256": hashlib.sha256(text.encode()).hexdigest(),
        "provider": getattr(ctx, "provider", None),
        "fallback": bool(getattr(ctx, "fallback", False)),
        "request_id": getattr(ctx, "request_id", None),
    }
    await store.record_use(voice.row, detail, key_id)


def store_for(services: Any) -> VoiceStore | None:
    """The services' voice store (created on first use), or None without a database."""
    if services.keystore is None:
        return None
    store = getattr(services, "voice_store", None)
    if store is None:
        store = VoiceStore(services.keystore.sessions)
        services.voice_store = store
    return store


async def cloned_voice(services: Any, tenant: str, voice: str | None) -> ClonedVoice | None:
    """None for an ordinary voice name; the resolved voice for ``custom:<id>``; else an APIError."""
    if not is_custom(voice):
        return None
    assert voice is not None
    try:
        return await resolve(store_for(services), tenant, voice)
    except VoiceRefused as exc:
        err_type = "permission_error" if exc.status == 403 else "invalid_request_error"
        raise APIError(exc.status, exc.message, type=err_type, code=exc.code, param="voice") from None
