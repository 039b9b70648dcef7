"""Rows of cloned voices: consent challenges, voices (with their consent records) and the audit log.

Every read is tenant-bound: a voice of another tenant is "not found", never "forbidden", so ids
leak nothing. Status is read from the database on every use (no cache), which is what makes a
revocation refuse the next synthesis at once on every replica.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.db.models import Voice, VoiceAuditEvent, VoiceChallenge

AUDIT_COLUMNS = ("id", "ts", "voice_id", "tenant", "key_id", "event", "detail")
CONSENT_COLUMNS = (
    "id", "tenant", "key_id", "name", "purpose", "language", "statement", "code", "created_at",
    "sample_sha256", "consent_sha256", "checks", "provider", "target_model", "provider_voice_id",
    "provider_status", "fallback", "status", "ready_at", "revoked_at", "revocation_reason", "use_count",
)  # fmt: skip


def now() -> datetime:
    return datetime.now(UTC)


def _aware(ts: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; they were written in UTC."""
    if ts is not None and ts.tzinfo is None:
        return ts.replace(tzinfo=UTC)
    return ts


def new_voice_id() -> str:
    return "v" + secrets.token_hex(8)


def provider_prefix(voice_id: str) -> str:
    """``[a-z0-9]{1,9}`` (satisfies every documented prefix rule) and unique per enrolment; never a name."""
    return "tg" + voice_id[1:8]


class VoiceStore:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    # ------------------------------------------------------------------ challenges

    async def add_challenge(self, challenge: VoiceChallenge) -> None:
        async with self.sessions() as s, s.begin():
            s.add(challenge)

    async def challenge(self, tenant: str, code: str) -> VoiceChallenge | None:
        async with self.sessions() as s:
            row = await s.get(VoiceChallenge, code)
        if row is None or row.tenant != tenant:
            return None
        row.expires_at = _aware(row.expires_at)  # type: ignore[assignment]
        row.used_at = _aware(row.used_at)
        return row

    # ------------------------------------------------------------------ voices

    async def count(self, tenant: str) -> int:
        async with self.sessions() as s:
            return int(
                await s.scalar(
                    select(func.count())
                    .select_from(Voice)
                    .where(Voice.tenant == tenant, Voice.status != "revoked")
                )
                or 0
            )

    async def by_request(self, tenant: str, request_hash: str) -> Voice | None:
        async with self.sessions() as s:
            return await s.scalar(
                select(Voice).where(Voice.tenant == tenant, Voice.request_hash == request_hash)
            )

    async def get(self, tenant: str | None, voice_id: str) -> Voice | None:
        """The voice, if it belongs to ``tenant`` (None: any tenant, for operators)."""
        async with self.sessions() as s:
            row = await s.get(Voice, voice_id)
        if row is None or (tenant is not None and row.tenant != tenant):
            return None
        return row

    async def list(self, tenant: str | None) -> list[Voice]:
        query = select(Voice).order_by(Voice.created_at)
        if tenant is not None:
            query = query.where(Voice.tenant == tenant)
        async with self.sessions() as s:
            return list(await s.scalars(query))

    async def create(self, voice: Voice, code: str, detail: dict[str, Any]) -> bool:
        """Insert the voice, use up its challenge and audit the enrolment, in one transaction.
        False when the same request (tenant + request hash) or the same code got there first."""
        try:
            async with self.sessions() as s, s.begin():
                used = await s.execute(
                    update(VoiceChallenge)
                    .where(VoiceChallenge.code == code, VoiceChallenge.used_at.is_(None))
                    .values(used_at=voice.created_at)
                )
                if used.rowcount != 1:
                    return False
                s.add(voice)
                s.add(_event(voice, "enrol", detail, voice.key_id))
        except IntegrityError:
            return False
        return True

    async def set(
        self, voice: Voice, event: str, detail: dict[str, Any], key_id: str | None, **values: Any
    ) -> None:
        """Update ``voice``'s columns and append an audit event, in one transaction."""
        async with self.sessions() as s, s.begin():
            if values:
                await s.execute(update(Voice).where(Voice.id == voice.id).values(**values))
            s.add(_event(voice, event, detail, key_id))
        for name, value in values.items():
            setattr(voice, name, value)

    async def record_use(self, voice: Voice, detail: dict[str, Any], key_id: str | None) -> None:
        async with self.sessions() as s, s.begin():
            await s.execute(update(Voice).where(Voice.id == voice.id).values(use_count=Voice.use_count + 1))
            s.add(_event(voice, "use", detail, key_id))

    async def audit(self, tenant: str | None, voice_id: str | None = None) -> list[VoiceAuditEvent]:
        query = select(VoiceAuditEvent).order_by(VoiceAuditEvent.id)
        if tenant is not None:
            query = query.where(VoiceAuditEvent.tenant == tenant)
        if voice_id is not None:
            query = query.where(VoiceAuditEvent.voice_id == voice_id)
        async with self.sessions() as s:
            return list(await s.scalars(query))


def _event(voice: Voice, event: str, detail: dict[str, Any], key_id: str | None) -> VoiceAuditEvent:
    return VoiceAuditEvent(
        voice_id=voice.id, tenant=voice.tenant, key_id=key_id, ts=now(), event=event, detail=detail
    )


def challenge_row(
    *, code: str, tenant: str, key_id: str | None, purpose: str, language: str, statement: str, ttl_s: float
) -> VoiceChallenge:
    created = now()
    return VoiceChallenge(
        code=code, tenant=tenant, key_id=key_id, purpose=purpose, language=language, statement=statement,
        created_at=created, expires_at=created + timedelta(seconds=ttl_s),
    )  # fmt: skip


def iso(ts: datetime | None) -> str | None:
    ts = _aware(ts)
    return ts.isoformat() if ts is not None else None


def consent_record(voice: Voice) -> dict[str, Any]:
    """The consent record as exported to an auditor (every field of the row, times in ISO 8601)."""
    row = {name: getattr(voice, name) for name in CONSENT_COLUMNS}
    for name in ("created_at", "ready_at", "revoked_at"):
        row[name] = iso(row[name])
    return row


def audit_row(event: VoiceAuditEvent) -> dict[str, Any]:
    return {name: (iso(event.ts) if name == "ts" else getattr(event, name)) for name in AUDIT_COLUMNS}
