"""Retrieval quality on the committed bilingual fixture (17 documents in 7 formats, 83 questions):
recall@5 and MRR for the offline path (jieba + BM25) and the cloud path (text-embedding-v4 and
qwen3-rerank as the simulator answers them, fused with BM25), and grounded-chat decisions:
in-corpus questions get passages, out-of-corpus ones are declined.

The simulator's vectors are hashed character n-grams, so the cloud figure measures the pipeline
(batching, fusion, rerank, citations), not Bailian's model quality."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import openai
import pytest

from tests.fixtures.knowledge.evaluate import evaluate, ingest
from tests.fixtures.knowledge.questions import QUESTIONS, UNANSWERABLE

#: The issue's target for the offline path; the cloud path must do at least as well here.
RECALL_AT_5 = 0.85
MRR = 0.70
PATHS = {
    "offline": {
        "dense": False,
        "rerank": False,
    },  # chat still reaches the simulator: grounding is what is tested
    "cloud": {},
}


@pytest.fixture(params=sorted(PATHS))
def kb(
    request: pytest.FixtureRequest, gateway_settings: Callable[..., Any], run_gateway: Callable[..., Any]
) -> Any:
    server = run_gateway(gateway_settings(knowledge=PATHS[request.param]))
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=60)
    return request.param, client, ingest(client)


def test_recall_and_mrr(kb: Any) -> None:
    path, client, store_id = kb
    scores = evaluate(client, store_id, k=5)
    print(f"\n{path}: {scores.line()}; misses: {scores.misses}")
    assert scores.modes == {"lexical" if path == "offline" else "hybrid"}
    assert scores.recall_at_k >= RECALL_AT_5, scores.misses
    assert scores.mrr >= MRR


def test_grounded_answers_and_declines(kb: Any, sim: Any) -> None:
    path, client, store_id = kb

    def answered(question: str) -> bool:
        reply = client.chat.completions.create(
            model="qwen-plus",
            messages=[{"role": "user", "content": question}],
            extra_body={"knowledge": {"vector_store_ids": [store_id]}},
        )
        return bool((reply.model_extra or {})["knowledge"]["answered"])

    declined = [q for q in UNANSWERABLE if not answered(q)]
    assert declined == UNANSWERABLE
    sample = QUESTIONS[::3]
    rate = sum(answered(q) for q, _, _ in sample) / len(sample)
    print(f"\n{path}: answered {rate:.2f} of in-corpus questions, declined all {len(UNANSWERABLE)} others")
    assert rate >= 0.85
