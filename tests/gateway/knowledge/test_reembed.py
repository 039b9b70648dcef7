"""Re-embedding (gateway/knowledge/reembed.py): a store searched lexically because its vectors
are of another space, or missing, is embedded again in the background, with its progress on the
store object, and is searched densely once every chunk is in the current space."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import openai

from gateway.knowledge.config import KnowledgeConfig
from gateway.knowledge.index import IndexCache
from gateway.knowledge.search import Searcher
from tests.conftest import SimHandle
from tests.gateway.knowledge.test_dense import _Encoders, _Store
from tests.gateway.knowledge.test_retrieval_resilience import FAQ, MANUAL, _ingest, _sdk, _search
from tests.gateway.saas_support import ADMIN_KEY


def _until_reembedded(client: openai.OpenAI, store_id: str, timeout_s: float = 90.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        extra = client.vector_stores.retrieve(store_id).model_extra or {}
        state = extra.get("reembedding") or {}
        if state.get("status") in ("completed", "failed"):
            return {**state, "embedding_model": extra["embedding_model"]}
        assert time.monotonic() < deadline, f"re-embedding did not finish: {state}"
        time.sleep(0.2)


def _documents(sim: SimHandle) -> list[dict[str, Any]]:
    return [r for r in sim.requests("embedding") if r["body"]["parameters"]["text_type"] == "document"]


def test_a_store_of_another_space_is_reembedded(
    gateway_settings: Callable[..., Any], run_gateway: Callable[..., Any], sim: SimHandle, tmp_path: Any
) -> None:
    first = run_gateway(gateway_settings(data_dir=tmp_path / "shared", knowledge={"chunk_tokens": 120}))
    client = _sdk(first)
    store = client.vector_stores.create(name="kb")
    chunks = sum(
        _ingest(client, store.id, name, data).model_extra["chunk_count"]  # type: ignore[index]
        for name, data in (("faq.csv", FAQ), ("manual.md", MANUAL))
    )
    assert _search(client, store.id, "reset password")[1]["search_mode"] == "hybrid"
    first.stop()
    sim.clear_requests()
    # the operator changes the dimension: the 512-d vectors are another space
    second = _sdk(
        run_gateway(
            gateway_settings(
                data_dir=tmp_path / "shared", knowledge={"chunk_tokens": 120, "embedding_dimension": 256}
            )
        )
    )
    files, extra = _search(second, store.id, "reset password")
    # until it has moved, the query is embedded in the store's own space (512): never across spaces
    assert files[0] == "faq.csv" and extra["search_mode"] == "hybrid"
    state = _until_reembedded(second, store.id)
    assert state == {
        "status": "completed",
        "model": "text-embedding-v4/256",
        "done": chunks,
        "total": chunks,
        "error": None,
        "embedding_model": "text-embedding-v4/256",
    }
    embedded = _documents(sim)
    assert {r["body"]["parameters"]["dimension"] for r in embedded} == {256}
    assert sum(len(r["body"]["input"]["texts"]) for r in embedded) == chunks + 1  # + the probe
    files, extra = _search(second, store.id, "reset password")
    assert files[0] == "faq.csv" and extra["search_mode"] == "hybrid"
    assert second.vector_stores.retrieve(store.id).status == "completed"


#: A cloud-only embedding route: an outage leaves chunks without vectors (the default chain ends
#: with the local e5, which would embed them: test_local_embedding.py).
CLOUD_ONLY = {"embedding": {"chain": ["bailian:text-embedding-v4"]}}


def test_chunks_without_vectors_are_embedded_once_the_cloud_is_back(
    gateway_settings: Callable[..., Any], run_gateway: Callable[..., Any], sim: SimHandle
) -> None:
    client = _sdk(run_gateway(gateway_settings(routes=CLOUD_ONLY)))
    store = client.vector_stores.create(name="kb")
    sim.fault(service="embedding", status=503, code="ServiceUnavailable")
    assert _ingest(client, store.id, "faq.csv", FAQ).status == "completed"  # stored without vectors
    assert _search(client, store.id, "reset password")[1]["search_mode"] == "lexical"
    assert (client.vector_stores.retrieve(store.id).model_extra or {})["reembedding"] is None  # cloud down
    sim.clear_faults()
    # searches start it once a query is embedded again (after the embedding breaker's cooldown)
    deadline = time.monotonic() + 60
    while (client.vector_stores.retrieve(store.id).model_extra or {})["reembedding"] is None:
        assert _search(client, store.id, "reset password")[1]["search_mode"] == "lexical"
        assert time.monotonic() < deadline, "no search started the re-embedding"
        time.sleep(0.5)
    state = _until_reembedded(client, store.id)
    assert (state["status"], state["done"], state["embedding_model"]) == (
        "completed",
        1,
        "text-embedding-v4/512",
    )
    assert _search(client, store.id, "reset password")[1]["search_mode"] == "hybrid"


def test_the_admin_endpoint_when_searches_do_not_start_it(
    gateway_settings: Callable[..., Any], run_gateway: Callable[..., Any], sim: SimHandle
) -> None:
    server = run_gateway(
        gateway_settings(admin_key=ADMIN_KEY, knowledge={"reembed": False}, routes=CLOUD_ONLY)
    )
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=ADMIN_KEY, max_retries=0, timeout=60)
    store = client.vector_stores.create(name="kb")
    sim.fault(service="embedding", status=503, code="ServiceUnavailable")
    assert _ingest(client, store.id, "faq.csv", FAQ).status == "completed"
    sim.clear_faults()
    sim.clear_requests()
    assert _search(client, store.id, "reset password")[1]["search_mode"] == "lexical"
    time.sleep(0.5)
    assert (
        _documents(sim) == []
        and (client.vector_stores.retrieve(store.id).model_extra or {})["reembedding"] is None
    )

    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    with httpx.Client(base_url=server.url, headers=admin, timeout=30) as http:
        assert http.post("/admin/knowledge/vector_stores/vs_nope/reembed").status_code == 404
        started = http.post(f"/admin/knowledge/vector_stores/{store.id}/reembed")
        assert started.status_code == 202 and started.json()["id"] == store.id, started.text
    assert _until_reembedded(client, store.id)["status"] == "completed"
    assert _search(client, store.id, "reset password")[1]["search_mode"] == "hybrid"


class _ProbingEncoders(_Encoders):
    """Vectors in space "m"; the route now prefers space "p" (as after a model change)."""

    def __init__(self, vector: np.ndarray) -> None:
        super().__init__(vector)
        self.spaces: list[str | None] = []

    def preferred_space(self) -> str:
        return "p"

    async def query(self, text: str, parent: Any = None, space: str | None = None) -> tuple[str, np.ndarray]:
        self.spaces.append(space)
        return space or "m", self.vector


class _Jobs:
    def __init__(self, accepting: bool) -> None:
        self.accepting = accepting
        self.scheduled: list[str] = []

    def accepts(self, store_id: str) -> bool:
        return self.accepting

    def schedule(self, store_id: str) -> bool:
        self.scheduled.append(store_id)
        return True


def test_a_search_probes_the_preferred_model_only_when_a_job_could_start() -> None:
    """A store outside the preferred space costs a search one extra query embedding (the probe
    that the preferred model is back), but not while its re-embedding runs or backs off."""
    rng = np.random.default_rng(5)
    vectors = rng.standard_normal((20, 8)).astype(np.float32)
    rows = [
        (i, "file-a", i, "", None, f"chunk {i}", f"refund w{i}", vectors[i].tobytes(), "m") for i in range(20)
    ]
    config = KnowledgeConfig()
    for accepting, probes, scheduled in ((True, ["m", "p"], ["vs"]), (False, ["m"], [])):
        store = _Store(rows)
        encoders, jobs = _ProbingEncoders(vectors[3]), _Jobs(accepting)
        searcher = Searcher(store, IndexCache(store, 10**6, config), encoders, config, jobs)  # type: ignore[arg-type]
        result = asyncio.run(searcher.search("t", ["vs"], "refund w3", max_results=5, rerank=False))
        assert result.mode == "hybrid"  # searched in the store's own space meanwhile
        assert (encoders.spaces, jobs.scheduled) == (probes, scheduled)
