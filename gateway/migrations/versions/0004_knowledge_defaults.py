"""Knowledge: a default grounding per API key, and the re-embedding progress of a vector store.

Revision ID: 0004_knowledge_defaults
Revises: 0003_voices
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_knowledge_defaults"
down_revision = "0003_voices"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # batch mode: SQLite cannot drop a column in place (the downgrade); PostgreSQL just alters
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("knowledge", sa.JSON, nullable=True))
    with op.batch_alter_table("kb_stores") as batch:
        batch.add_column(sa.Column("reembed", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("kb_stores") as batch:
        batch.drop_column("reembed")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("knowledge")
