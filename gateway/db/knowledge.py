"""Tables of the knowledge base: uploaded files, vector stores, their files, and chunks.

Every row carries ``tenant_id`` and every query starts from it (gateway/knowledge/store.py): a
foreign id is simply not found. File bytes live under the data dir, not in the database; chunk
vectors are float32 blobs ranked with numpy (no sqlite-vec/pgvector: neither loads here), keyed by
the embedding model that produced them so that two embedding spaces are never compared.
"""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from gateway.db.models import Base, BigIntPK


class KnowledgeFile(Base):
    """``POST /v1/files``: one uploaded file; its bytes are at ``<data_dir>/knowledge/<tenant>/<id>``."""

    __tablename__ = "kb_files"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    filename: Mapped[str] = mapped_column(String(255))
    purpose: Mapped[str] = mapped_column(String(32))
    bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[int] = mapped_column(BigInteger)  # epoch seconds, as OpenAI's objects


class VectorStore(Base):
    """A tenant's knowledge base. ``version`` grows on every change of its chunks, so that each
    replica's in-memory index knows when to rebuild; ``embedding_model`` names the space of its
    vectors (e.g. ``text-embedding-v4/512``), or is null while the store is lexical only."""

    __tablename__ = "kb_stores"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(256), default="")
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    meta: Mapped[dict] = mapped_column(JSON, default=dict)
    expires_after: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    last_active_at: Mapped[int] = mapped_column(BigInteger)
    version: Mapped[int] = mapped_column(Integer, default=0)
    embedding_model: Mapped[str | None] = mapped_column(String(128), nullable=True)
    #: re-embedding into the current space (gateway/knowledge/reembed.py): {"status", "model",
    #: "done", "total", "error"}, or null when none was ever needed
    reembed: Mapped[dict | None] = mapped_column(JSON, nullable=True)


class VectorStoreFile(Base):
    """A file attached to a store: ingestion status (in_progress, completed, failed), its error,
    attributes used by search filters, and ``generation``, bumped on every re-ingestion so that
    a late worker of an older generation cannot write stale chunks."""

    __tablename__ = "kb_store_files"

    store_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    file_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16))
    last_error: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    attributes: Mapped[dict] = mapped_column(JSON, default=dict)
    chunking: Mapped[dict] = mapped_column(JSON, default=dict)
    usage_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    chunk_count: Mapped[int] = mapped_column(Integer, default=0)
    pages: Mapped[int] = mapped_column(Integer, default=0)
    generation: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[int] = mapped_column(BigInteger)


class KnowledgeChunk(Base):
    """One retrievable passage. ``terms`` holds its jieba tokens (space-joined) for BM25; the
    vector, when present, came from ``embedding_model``."""

    __tablename__ = "kb_chunks"
    __table_args__ = (Index("ix_kb_chunks_store_file", "store_id", "file_id"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    store_id: Mapped[str] = mapped_column(String(40))
    file_id: Mapped[str] = mapped_column(String(40))
    ordinal: Mapped[int] = mapped_column(Integer)
    heading: Mapped[str] = mapped_column(Text, default="")
    page: Mapped[int | None] = mapped_column(Integer, nullable=True)
    text: Mapped[str] = mapped_column(Text)
    terms: Mapped[str] = mapped_column(Text)
    n_tokens: Mapped[int] = mapped_column(Integer)
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    embedding_model: Mapped[str | None] = mapped_column(String(128), nullable=True)


class FileBatch(Base):
    """``/v1/vector_stores/{id}/file_batches``: files attached together; status is derived from theirs."""

    __tablename__ = "kb_file_batches"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    store_id: Mapped[str] = mapped_column(String(40))
    file_ids: Mapped[list] = mapped_column(JSON)
    cancelled: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[int] = mapped_column(BigInteger)
