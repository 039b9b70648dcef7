"""The three tables of the SaaS layer. Schema changes go through an Alembic revision."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite only auto-increments an INTEGER PRIMARY KEY.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    pass


class Tenant(Base):
    """A customer. Monthly quotas: NULL means unlimited."""

    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    quota_tokens: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    quota_tts_chars: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    quota_asr_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    quota_video_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)


class ApiKey(Base):
    """An API key. Only the SHA-256 of the secret is stored; ``prefix`` identifies it to humans."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    prefix: Mapped[str] = mapped_column(String(16), index=True)
    secret_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    scopes: Mapped[list[str]] = mapped_column(JSON)
    rpm: Mapped[int | None] = mapped_column(Integer, nullable=True)
    tpm: Mapped[int | None] = mapped_column(Integer, nullable=True)
    concurrency: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    #: default knowledge grounding, {"vector_store_ids": [...], "max_num_results": n}
    knowledge: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class UsageRecord(Base):
    """One row per admitted request. ``ts_ms`` (epoch milliseconds) makes bucketing portable SQL."""

    __tablename__ = "usage_records"
    __table_args__ = (
        Index("ix_usage_tenant_ts", "tenant", "ts_ms"),
        Index("ix_usage_key_ts", "key_id", "ts_ms"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(128))
    ts_ms: Mapped[int] = mapped_column(BigInteger, index=True)
    key_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    tenant: Mapped[str] = mapped_column(String(64))
    route: Mapped[str] = mapped_column(String(64))
    provider: Mapped[str | None] = mapped_column(String(128), nullable=True)
    model: Mapped[str | None] = mapped_column(String(128), nullable=True)
    fallback: Mapped[bool] = mapped_column(Boolean, default=False)
    cache: Mapped[str] = mapped_column(String(8), default="bypass")
    tokens_in: Mapped[int] = mapped_column(Integer, default=0)
    tokens_out: Mapped[int] = mapped_column(Integer, default=0)
    characters: Mapped[int] = mapped_column(Integer, default=0)
    audio_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    video_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    latency_ms: Mapped[float] = mapped_column(Float, default=0.0)
    status: Mapped[int] = mapped_column(Integer, default=200)


# --------------------------------------------------------------------------- cloned voices (issue 13)


class VoiceChallenge(Base):
    """A consent statement handed out with a one-time code; the consent recording must read it."""

    __tablename__ = "voice_challenges"

    code: Mapped[str] = mapped_column(String(16), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64), index=True)
    key_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    purpose: Mapped[str] = mapped_column(String(300))
    language: Mapped[str] = mapped_column(String(8))
    statement: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Voice(Base):
    """A cloned voice and its consent record (who, when, what was read, hashes, checks, provider)."""

    __tablename__ = "voices"
    __table_args__ = (UniqueConstraint("tenant", "request_hash", name="uq_voices_tenant_request"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64), index=True)
    key_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    name: Mapped[str] = mapped_column(String(100), default="")
    purpose: Mapped[str] = mapped_column(String(300))
    language: Mapped[str] = mapped_column(String(8))
    statement: Mapped[str] = mapped_column(Text)
    code: Mapped[str] = mapped_column(String(16))
    request_hash: Mapped[str] = mapped_column(String(64))
    sample_sha256: Mapped[str] = mapped_column(String(64))
    consent_sha256: Mapped[str] = mapped_column(String(64))
    checks: Mapped[dict] = mapped_column(JSON)
    provider: Mapped[str] = mapped_column(String(32))
    target_model: Mapped[str] = mapped_column(String(64))
    provider_prefix: Mapped[str] = mapped_column(String(16))
    provider_voice_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    provider_status: Mapped[str | None] = mapped_column(String(32), nullable=True)
    fallback: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))  # pending | active | failed | revoked
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ready_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revocation_reason: Mapped[str | None] = mapped_column(String(300), nullable=True)
    use_count: Mapped[int] = mapped_column(Integer, default=0)


class VoiceAuditEvent(Base):
    """Append-only audit log of a voice: enrolment, status changes, every use, revocation."""

    __tablename__ = "voice_audit"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    voice_id: Mapped[str] = mapped_column(String(32), index=True)
    tenant: Mapped[str] = mapped_column(String(64), index=True)
    key_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    ts: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    event: Mapped[str] = mapped_column(String(32))
    detail: Mapped[dict] = mapped_column(JSON)
