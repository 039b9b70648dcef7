"""Cloned voices: consent challenges, voices with their consent records, and the voice audit log.

Revision ID: 0003_voices
Revises: 0002_knowledge
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_voices"
down_revision = "0002_knowledge"
branch_labels = None
depends_on = None

_BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "voice_challenges",
        sa.Column("code", sa.String(16), primary_key=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=True),
        sa.Column("purpose", sa.String(300), nullable=False),
        sa.Column("language", sa.String(8), nullable=False),
        sa.Column("statement", sa.Text, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.Column("used_at", _TS, nullable=True),
    )
    op.create_index("ix_voice_challenges_tenant", "voice_challenges", ["tenant"])
    op.create_table(
        "voices",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("purpose", sa.String(300), nullable=False),
        sa.Column("language", sa.String(8), nullable=False),
        sa.Column("statement", sa.Text, nullable=False),
        sa.Column("code", sa.String(16), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("sample_sha256", sa.String(64), nullable=False),
        sa.Column("consent_sha256", sa.String(64), nullable=False),
        sa.Column("checks", sa.JSON, nullable=False),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("target_model", sa.String(64), nullable=False),
        sa.Column("provider_prefix", sa.String(16), nullable=False),
        sa.Column("provider_voice_id", sa.String(128), nullable=True),
        sa.Column("provider_status", sa.String(32), nullable=True),
        sa.Column("fallback", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("ready_at", _TS, nullable=True),
        sa.Column("revoked_at", _TS, nullable=True),
        sa.Column("revocation_reason", sa.String(300), nullable=True),
        sa.Column("use_count", sa.Integer, nullable=False),
        sa.UniqueConstraint("tenant", "request_hash", name="uq_voices_tenant_request"),
    )
    op.create_index("ix_voices_tenant", "voices", ["tenant"])
    op.create_table(
        "voice_audit",
        sa.Column("id", _BIGINT_PK, primary_key=True, autoincrement=True),
        sa.Column("voice_id", sa.String(32), nullable=False),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=True),
        sa.Column("ts", _TS, nullable=False),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("detail", sa.JSON, nullable=False),
    )
    op.create_index("ix_voice_audit_voice_id", "voice_audit", ["voice_id"])
    op.create_index("ix_voice_audit_tenant", "voice_audit", ["tenant"])


def downgrade() -> None:
    op.drop_table("voice_audit")
    op.drop_table("voices")
    op.drop_table("voice_challenges")
