"""Prometheus families of the knowledge base, on the gateway's own registry (gateway/metrics.py).

Ingestion errors and volumes, retrieval latency by mode, search hit/empty and grounded-chat
answered/declined rates per tenant, and storage per tenant (refreshed after each change).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge, Histogram

_SEARCH_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class KnowledgeMetrics:
    def __init__(self, registry: Any) -> None:
        r = registry
        self.files = Counter(
            "talkgate_knowledge_ingested_files", "Files ingested into vector stores.", ["tenant"], registry=r
        )
        self.pages = Counter("talkgate_knowledge_ingested_pages", "Pages ingested.", ["tenant"], registry=r)
        self.chunks = Counter("talkgate_knowledge_ingested_chunks", "Chunks written.", ["tenant"], registry=r)
        self.failures = Counter(
            "talkgate_knowledge_ingestion_failures",
            "Files whose ingestion failed, by last_error code.",
            ["tenant", "code"],
            registry=r,
        )
        self.ingestion_seconds = Histogram(
            "talkgate_knowledge_ingestion_seconds", "Time to ingest one file.", registry=r
        )
        self.search_seconds = Histogram(
            "talkgate_knowledge_search_seconds",
            "Retrieval time (lexical, dense, fusion, rerank), by mode.",
            ["mode"],
            buckets=_SEARCH_BUCKETS,
            registry=r,
        )
        self.searches = Counter(
            "talkgate_knowledge_searches",
            "Searches by outcome: hit (at least one passage) or empty.",
            ["tenant", "outcome"],
            registry=r,
        )
        self.grounded = Counter(
            "talkgate_knowledge_grounded_answers",
            "Grounded chat turns by outcome: answered (passages given to the model) or declined.",
            ["tenant", "outcome"],
            registry=r,
        )
        self.storage_bytes = Gauge(
            "talkgate_knowledge_storage_bytes",
            "Bytes of uploaded files kept, per tenant.",
            ["tenant"],
            registry=r,
        )
        self.storage_chunks = Gauge(
            "talkgate_knowledge_chunks", "Chunks stored, per tenant.", ["tenant"], registry=r
        )

    def ingested(self, tenant: str, pages: int, chunks: int, seconds: float) -> None:
        self.files.labels(tenant).inc()
        self.pages.labels(tenant).inc(pages)
        self.chunks.labels(tenant).inc(chunks)
        self.ingestion_seconds.observe(seconds)

    def ingestion_failed(self, tenant: str, code: str) -> None:
        self.failures.labels(tenant, code).inc()

    def searched(self, tenant: str, mode: str, seconds: float, hits: int) -> None:
        self.search_seconds.labels(mode).observe(seconds)
        self.searches.labels(tenant, "hit" if hits else "empty").inc()

    def grounded_answer(self, tenant: str, answered: bool) -> None:
        self.grounded.labels(tenant, "answered" if answered else "declined").inc()

    def storage(self, stats: list[dict[str, Any]]) -> None:
        for row in stats:
            self.storage_bytes.labels(row["tenant"]).set(row["bytes"])
            self.storage_chunks.labels(row["tenant"]).set(row["chunks"])
