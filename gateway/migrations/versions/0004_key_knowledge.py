"""API keys: a default knowledge grounding per key (gateway/knowledge/spec.py).

Revision ID: 0004_key_knowledge
Revises: 0003_voices
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_key_knowledge"
down_revision = "0003_voices"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # batch mode: SQLite cannot drop a column in place (the downgrade), PostgreSQL just alters
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("knowledge", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("knowledge")
