"""The knowledge base with the local e5 model: offline hybrid retrieval on the fixture, and the one
space per store rule when the cloud comes and goes (a store is never half one model, half another,
and a query is always embedded by the model of the store's vectors)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.conftest import SimHandle
from tests.fixtures.knowledge.evaluate import evaluate, ingest
from tests.fixtures.knowledge.questions import QUESTIONS, UNANSWERABLE
from tests.gateway.knowledge.test_retrieval_quality import MRR, RECALL_AT_5
from tests.servers import ServerThread

pytestmark = pytest.mark.slow  # loads the local e5 model

E5_SPACE = "e5-small/384"
CLOUD_SPACE = "text-embedding-v4/512"
#: (question, file, phrase of the answering passage): no word in common with the passage, so BM25
#: alone cannot find it; the second is an English question over a Chinese document.
PARAPHRASES = [
    ("How do I get rid of my login for good?", "account_help.docx", "Delete account"),
    ("How many points do I earn per yuan spent?", "membership_zh.docx", "每消费1元获得1积分"),
]
FAQ = b"question,answer\nHow do I reset my password?,Use the forgot password link on the login page.\n"
WARRANTY = b"question,answer\nHow long is the warranty?,Every appliance is covered for two years.\n"
MANUAL = "\n\n".join(
    f"## Topic {i}\n\n" + " ".join([f"Section {i} explains product feature number {i} in detail."] * 3)
    for i in range(130)
).encode()


def _sdk(server: ServerThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120)


def _offline(gateway_settings: Callable[..., Any], data_dir: Path, **knowledge: Any) -> Any:
    return gateway_settings(
        dashscope_api_key=None,
        dashscope_http_base_url="http://192.0.2.1:9/api/v1",  # nowhere: nothing may reach the network
        data_dir=data_dir,
        knowledge=knowledge,
    )


def _upload(client: openai.OpenAI, store_id: str, name: str, data: bytes) -> Any:
    uploaded = client.files.create(file=(name, data), purpose="assistants")
    return client.vector_stores.files.create_and_poll(file_id=uploaded.id, vector_store_id=store_id)


def _search(client: openai.OpenAI, store_id: str, query: str, k: int = 5) -> tuple[list[Any], str]:
    page = client.vector_stores.search(store_id, query=query, max_num_results=k)
    return page.data, (page.model_extra or {})["search_mode"]


def _found(hits: list[Any], document: str, phrase: str) -> bool:
    return any(h.filename == document and phrase in h.content[0].text for h in hits)


def _chunk_spaces(data_dir: Path) -> dict[str | None, int]:
    with sqlite3.connect(data_dir / "talkgate.db") as db:
        return dict(db.execute("SELECT embedding_model, count(*) FROM kb_chunks GROUP BY embedding_model"))


def _answered(client: openai.OpenAI, store_id: str, question: str) -> bool:
    reply = client.chat.completions.create(  # offline: a decline calls no model, an answer smollm2
        model="qwen-plus",
        messages=[{"role": "user", "content": question}],
        max_tokens=8,
        extra_body={"knowledge": {"vector_store_ids": [store_id]}},
    )
    return bool((reply.model_extra or {})["knowledge"]["answered"])


def _space(client: openai.OpenAI, store_id: str) -> str | None:
    return (client.vector_stores.retrieve(store_id).model_extra or {})["embedding_model"]


def test_offline_fixture_is_hybrid_with_e5_and_finds_paraphrases_bm25_cannot(
    gateway_settings: Callable[..., Any],
    run_gateway: Callable[..., ServerThread],
    sim: SimHandle,
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "kb"
    server = run_gateway(_offline(gateway_settings, data_dir))
    client = _sdk(server)
    store_id = ingest(client)
    assert _space(client, store_id) == E5_SPACE and set(_chunk_spaces(data_dir)) == {E5_SPACE}
    scores = evaluate(client, store_id, k=5)
    print(f"\noffline e5 + BM25: {scores.line()}; misses: {scores.misses}")
    assert scores.modes == {"hybrid"}
    assert scores.recall_at_k >= RECALL_AT_5 and scores.mrr >= MRR, scores.misses
    for question, document, phrase in PARAPHRASES:
        hits, mode = _search(client, store_id, question)
        assert mode == "hybrid" and _found(hits, document, phrase), (question, [h.filename for h in hits])
    # grounded chat still declines what the corpus does not answer: e5's cosine (0.7+ for anything)
    # is not reported as a relevance score, so the decision rests on lexical evidence
    assert [q for q in UNANSWERABLE if _answered(client, store_id, q)] == []
    assert all(_answered(client, store_id, q) for q, _, _ in QUESTIONS[:: len(QUESTIONS) // 3])
    server.stop()
    # the same store searched by BM25 alone (dense off) misses them: e5 is what found them
    lexical = _sdk(run_gateway(_offline(gateway_settings, data_dir, dense=False)))
    for question, document, phrase in PARAPHRASES:
        hits, mode = _search(lexical, store_id, question)
        assert mode == "lexical" and not _found(hits, document, phrase), question
    assert sim.requests() == []


def test_a_store_embedded_by_e5_during_an_outage_is_queried_with_e5_once_the_cloud_is_back(
    gateway_settings: Callable[..., Any], run_gateway: Callable[..., ServerThread], sim: SimHandle
) -> None:
    # re-embedding off: this is about the store's pinned space (test_reembed.py moves stores)
    client = _sdk(run_gateway(gateway_settings(retry={"attempts": 1}, knowledge={"reembed": False})))
    store = client.vector_stores.create(name="kb")
    sim.fault(service="embedding", status=503, code="ServiceUnavailable")
    assert _upload(client, store.id, "faq.csv", FAQ).status == "completed"
    assert _space(client, store.id) == E5_SPACE  # the chain's last link embedded the first file
    sim.clear_faults()
    sim.clear_requests()
    hits, mode = _search(client, store.id, "I forgot my password")
    assert mode == "hybrid" and hits[0].filename == "faq.csv"
    assert sim.requests("embedding") == []  # the query went to e5 too, not to the cloud model
    # a later file joins the store's space even though the cloud now answers
    assert _upload(client, store.id, "warranty.csv", WARRANTY).status == "completed"
    assert sim.requests("embedding") == [] and _space(client, store.id) == E5_SPACE


def test_a_cloud_outage_between_files_never_mixes_e5_into_a_cloud_store(
    gateway_settings: Callable[..., Any],
    run_gateway: Callable[..., ServerThread],
    sim: SimHandle,
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "kb"
    client = _sdk(run_gateway(gateway_settings(data_dir=data_dir, retry={"attempts": 1})))
    store = client.vector_stores.create(name="kb")
    assert _upload(client, store.id, "faq.csv", FAQ).status == "completed"
    assert _space(client, store.id) == CLOUD_SPACE
    sim.fault(service="embedding", status=503, code="ServiceUnavailable")
    assert _upload(client, store.id, "warranty.csv", WARRANTY).status == "completed"
    # the second file has no vectors (e5 was not asked: it is another space), so the store is lexical
    assert _chunk_spaces(data_dir) == {CLOUD_SPACE: 1, None: 1}
    assert _space(client, store.id) == CLOUD_SPACE
    sim.clear_faults()
    hits, mode = _search(client, store.id, "how long is the warranty")
    assert mode == "lexical" and hits[0].filename == "warranty.csv"


def test_a_cloud_outage_inside_one_file_leaves_it_without_vectors_not_mixed(
    gateway_settings: Callable[..., Any],
    run_gateway: Callable[..., ServerThread],
    sim: SimHandle,
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "kb"
    client = _sdk(run_gateway(gateway_settings(data_dir=data_dir, retry={"attempts": 1})))
    store = client.vector_stores.create(name="kb")
    sim.fault(service="embedding", latency_ms=1, times=10)  # the first 100 chunks (10 calls) embed...
    sim.fault(service="embedding", status=503, code="ServiceUnavailable")  # ...then the cloud is gone
    done = _upload(client, store.id, "manual.md", MANUAL)
    assert done.status == "completed" and done.model_extra["chunk_count"] > 100  # type: ignore[index]
    assert _chunk_spaces(data_dir) == {None: done.model_extra["chunk_count"]}  # type: ignore[index]
    assert _space(client, store.id) is None
    assert _search(client, store.id, "product feature number 7")[1] == "lexical"
