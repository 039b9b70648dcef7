"""Retrieval through the router: Bailian batch limits, retries, degradation to lexical search when
embeddings or rerank fail, and never comparing vectors from two embedding spaces."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import openai

from tests.conftest import SimHandle

MANUAL = "\n\n".join(
    f"## Topic {i}\n\n" + " ".join([f"Section {i} explains product feature number {i} in detail."] * 30)
    for i in range(12)
).encode()
FAQ = b"question,answer\nHow do I reset my password?,Use the forgot password link on the login page.\n"


def _sdk(server: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60)


def _ingest(client: openai.OpenAI, store_id: str, name: str, data: bytes) -> Any:
    uploaded = client.files.create(file=(name, data), purpose="assistants")
    return client.vector_stores.files.create_and_poll(file_id=uploaded.id, vector_store_id=store_id)


def _search(client: openai.OpenAI, store_id: str, query: str) -> tuple[list[str], dict[str, Any]]:
    page = client.vector_stores.search(store_id, query=query, max_num_results=3)
    return [h.filename for h in page.data], page.model_extra or {}


def test_embedding_batches_respect_the_bailian_limit(
    gateway_settings: Callable[..., Any], run_gateway: Callable[..., Any], sim: SimHandle
) -> None:
    server = run_gateway(gateway_settings(knowledge={"chunk_tokens": 120, "chunk_overlap": 0}))
    ready = httpx.get(f"{server.url}/readyz", timeout=30).json()  # embedding/rerank providers do not break it
    assert ready["mode"] == "cloud" and set(ready["providers"]) == {"chat", "asr", "tts"}
    client = _sdk(server)
    store = client.vector_stores.create(name="kb")
    done = _ingest(client, store.id, "manual.md", MANUAL)
    assert done.status == "completed"
    calls = [r for r in sim.requests("embedding") if r["body"]["parameters"]["text_type"] == "document"]
    sizes = [len(r["body"]["input"]["texts"]) for r in calls]
    assert max(sizes) <= 10 and sum(sizes) == done.model_extra["chunk_count"] > 10, sizes  # type: ignore[index]
    assert all(r["body"]["parameters"]["dimension"] == 512 for r in calls)


def test_a_transient_embedding_error_is_retried(
    gateway_settings: Callable[..., Any], run_gateway: Callable[..., Any], sim: SimHandle
) -> None:
    client = _sdk(run_gateway(gateway_settings()))
    store = client.vector_stores.create(name="kb")
    sim.fault(service="embedding", status=500, code="InternalError", times=1)
    assert _ingest(client, store.id, "faq.csv", FAQ).status == "completed"
    files, extra = _search(client, store.id, "reset password")
    assert files == ["faq.csv"] and extra["search_mode"] == "hybrid"
    assert client.vector_stores.retrieve(store.id).model_extra["embedding_model"] == "text-embedding-v4/512"  # type: ignore[index]


def test_cloud_outage_degrades_to_lexical_search(
    gateway_settings: Callable[..., Any], run_gateway: Callable[..., Any], sim: SimHandle
) -> None:
    # cloud-only embedding route (the default chain ends with local e5: test_local_embedding.py)
    client = _sdk(
        run_gateway(gateway_settings(routes={"embedding": {"chain": ["bailian:text-embedding-v4"]}}))
    )
    store = client.vector_stores.create(name="kb")
    sim.fault(service="embedding", status=503, code="ServiceUnavailable")
    sim.fault(service="rerank", status=503, code="ServiceUnavailable")
    assert _ingest(client, store.id, "faq.csv", FAQ).status == "completed"  # stored without vectors
    files, extra = _search(client, store.id, "reset password")
    assert files == ["faq.csv"]
    assert (extra["search_mode"], extra["reranked"]) == ("lexical", False)
    sim.clear_faults()
    files, extra = _search(client, store.id, "reset password")
    # the cloud is back: rerank works, but the store has no vectors, so it stays lexical (not half-dense)
    assert files == ["faq.csv"] and (extra["search_mode"], extra["reranked"]) == ("lexical", True)


def test_vectors_of_another_embedding_space_are_never_compared(
    gateway_settings: Callable[..., Any], run_gateway: Callable[..., Any], sim: SimHandle, tmp_path: Any
) -> None:
    first = run_gateway(gateway_settings(data_dir=tmp_path / "shared"))
    client = _sdk(first)
    store = client.vector_stores.create(name="kb")
    assert _ingest(client, store.id, "faq.csv", FAQ).status == "completed"
    assert _search(client, store.id, "reset password")[1]["search_mode"] == "hybrid"
    first.stop()
    # the operator changes the embedding dimension: the stored 512-d vectors are a different space,
    # so the query is embedded in the store's own space (512), never compared at 256 (re-embedding
    # off here: test_reembed.py moves the store to the new dimension)
    second = run_gateway(
        gateway_settings(
            data_dir=tmp_path / "shared", knowledge={"embedding_dimension": 256, "reembed": False}
        )
    )
    sim.clear_requests()
    files, extra = _search(_sdk(second), store.id, "reset password")
    assert files == ["faq.csv"] and extra["search_mode"] == "hybrid"
    queries = [r["body"]["parameters"] for r in sim.requests("embedding")]
    assert queries == [{"text_type": "query", "dimension": 512}]
    # a new store takes the new setting
    fresh = _sdk(second).vector_stores.create(name="kb2")
    assert _ingest(_sdk(second), fresh.id, "faq.csv", FAQ).status == "completed"
    assert (
        _sdk(second).vector_stores.retrieve(fresh.id).model_extra["embedding_model"]
        == "text-embedding-v4/256"
    )  # type: ignore[index]
