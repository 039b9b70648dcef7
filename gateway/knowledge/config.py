"""Settings of the knowledge base (``knowledge:`` in the YAML, ``TALKGATE_KNOWLEDGE__*`` in the environment)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class KnowledgeConfig(BaseModel):
    #: Largest document accepted by POST /v1/files (also bounded by max_upload_bytes).
    max_file_bytes: int = 20 * 1024 * 1024
    #: Bytes of uploaded files a tenant may keep; None = unlimited. Per-tenant overrides below.
    tenant_quota_bytes: int | None = 1024 * 1024 * 1024
    tenant_quota_overrides: dict[str, int] = Field(default_factory=dict)
    #: Chunk size and overlap in Qwen tokens (gateway/knowledge/chunking.py says why).
    chunk_tokens: int = Field(default=400, ge=100, le=4096)
    chunk_overlap: int = Field(default=50, ge=0, le=2048)
    #: Guards against documents that expand without bound (gateway/knowledge/parsers.py).
    max_pages: int = 2000
    max_unzipped_bytes: int = 100 * 1024 * 1024
    max_zip_ratio: float = 100.0
    max_text_chars: int = 5_000_000
    #: Dense retrieval through routes.embedding (cloud); off = lexical (jieba + BM25) only.
    dense: bool = True
    #: text-embedding-v4 dimension: 512 keeps 100k chunks at 205 MB of float32 (bench/knowledge.py);
    #: 1024 is the model's default.
    embedding_dimension: int = 512
    #: Rerank the fused candidates through routes.rerank (cloud) when it is configured.
    rerank: bool = True
    #: Candidates each retriever (BM25, dense) contributes to the fusion, and how many are reranked.
    candidates: int = 50
    rerank_candidates: int = 30
    #: Background ingestion tasks per process.
    workers: int = 1
    #: Chunks held in memory by the search indexes of one process (least recently used evicted).
    index_cache_chunks: int = 400_000
    #: Grounded chat answers only when one of the top 3 passages scores at least
    #: ``answer_min_score`` or covers at least ``answer_min_support`` of the question's words
    #: (idf-weighted); otherwise it declines without calling the model (no invented refund
    #: policies). Calibrated on tests/fixtures/knowledge (see README, "Knowledge base").
    answer_min_score: float = 0.4
    answer_min_support: float = 0.3
    #: Stores a tenant's chat requests are grounded in when they name none (tenant id → store ids).
    tenant_default_stores: dict[str, list[str]] = Field(default_factory=dict)
    #: Stores of at least this many chunks also get a projected dense index (principal directions
    #: of their own vectors, then the shortlist re-scored exactly: gateway/knowledge/dense.py),
    #: kept only if, at build time, it finds at least ``dense_min_recall`` of the exact top
    #: ``candidates`` on pseudo-queries; otherwise, and below this size, dense search is exact.
    dense_approx_min_chunks: int = Field(default=20_000, ge=0)
    dense_min_recall: float = Field(default=0.99, gt=0.0, le=1.0)
    #: A search that finds a store searched lexically only (vectors of another model or
    #: dimension, or none) while the cloud can embed starts re-embedding it in the background
    #: (gateway/knowledge/reembed.py); off: only POST /admin/knowledge/vector_stores/{id}/reembed does.
    reembed: bool = True
