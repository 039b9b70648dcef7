"""Text embedding and rerank through the official dashscope SDK against the simulator:
shapes, deterministic similarity, batch limits and error codes as Bailian answers them."""

from __future__ import annotations

import httpx
import numpy as np
from dashscope import TextEmbedding, TextReRank

from tests.conftest import SimHandle

REFUND = "退货政策：商品签收后7天内可无理由退货，退款原路返回。"
REFUND_Q = "签收后几天内可以退货？"
INVOICE = "电子发票会在订单完成后24小时内发送到您的邮箱。"


def _vectors(r: object) -> list[np.ndarray]:
    items = sorted(r.output["embeddings"], key=lambda e: e["text_index"])  # type: ignore[attr-defined]
    return [np.asarray(e["embedding"]) for e in items]


def test_embedding_shape_determinism_and_similarity(ds: SimHandle) -> None:
    r = TextEmbedding.call(model="text-embedding-v4", input=[REFUND, INVOICE, REFUND_Q], dimension=512)
    assert r.status_code == 200, r
    refund, invoice, question = _vectors(r)
    assert len(refund) == 512
    assert abs(float(np.linalg.norm(refund)) - 1.0) < 1e-3
    assert float(question @ refund) > float(question @ invoice) + 0.1
    assert r.usage["total_tokens"] > 0
    again = TextEmbedding.call(model="text-embedding-v4", input=REFUND, dimension=512, text_type="query")
    assert np.allclose(_vectors(again)[0], refund)
    default = TextEmbedding.call(model="text-embedding-v4", input="hello")
    assert len(_vectors(default)[0]) == 1024
    [first, *_] = ds.requests("embedding")
    assert first["body"]["input"]["texts"] == [REFUND, INVOICE, REFUND_Q]
    assert first["body"]["parameters"]["dimension"] == 512


def test_embedding_batch_limits_and_errors(ds: SimHandle) -> None:
    r = TextEmbedding.call(model="text-embedding-v4", input=[f"text {i}" for i in range(11)])
    assert r.status_code == 400 and r.code == "InvalidParameter"
    assert "batch size is invalid, it should not be larger than 10" in r.message
    assert (
        TextEmbedding.call(model="text-embedding-v2", input=[f"t {i}" for i in range(25)]).status_code == 200
    )
    r = TextEmbedding.call(model="text-embedding-v2", input=[f"t {i}" for i in range(26)])
    assert r.status_code == 400 and "larger than 25" in r.message
    r = TextEmbedding.call(model="text-embedding-v4", input=[""])
    assert r.status_code == 400 and "Range of input length should be [1, 8192]" in r.message
    r = TextEmbedding.call(model="text-embedding-v3", input="x", dimension=2048)
    assert r.status_code == 400 and r.code == "InvalidParameter"
    r = TextEmbedding.call(model="text-embedding-v9", input="x")
    assert r.status_code == 404 and r.code == "ModelNotFound"
    bad_key = httpx.post(
        f"{ds.http_base}/services/embeddings/text-embedding/text-embedding",
        headers={"Authorization": "Bearer wrong"},
        json={"model": "text-embedding-v4", "input": {"texts": ["x"]}},
    )
    assert bad_key.status_code == 401 and bad_key.json()["code"] == "InvalidApiKey"


def test_embedding_fault_injection(ds: SimHandle) -> None:
    ds.fault(service="embedding", status=429, code="Throttling.RateQuota", times=1)
    r = TextEmbedding.call(model="text-embedding-v4", input="x")
    assert r.status_code == 429 and r.code == "Throttling.RateQuota"
    assert TextEmbedding.call(model="text-embedding-v4", input="x").status_code == 200


def test_rerank_orders_by_relevance(ds: SimHandle) -> None:
    docs = [INVOICE, REFUND, "Our stores open at 9am."]
    r = TextReRank.call(model="qwen3-rerank", query=REFUND_Q, documents=docs, top_n=2, return_documents=True)
    assert r.status_code == 200, r
    results = r.output["results"]
    assert results[0]["index"] == 1 and len(results) == 2
    assert results[0]["document"]["text"] == REFUND
    assert 0.0 <= results[1]["relevance_score"] <= results[0]["relevance_score"] <= 1.0
    full = TextReRank.call(model="gte-rerank-v2", query=REFUND_Q, documents=docs)
    assert len(full.output["results"]) == 3 and full.output["results"][0].document is None
    assert full.usage["total_tokens"] > 0


def test_rerank_limits(ds: SimHandle) -> None:
    url = f"{ds.http_base}/services/rerank/text-rerank/text-rerank"
    auth = {"Authorization": f"Bearer {ds.api_key}"}
    too_many = {"model": "qwen3-rerank", "input": {"query": "q", "documents": ["d"] * 501}}
    r = httpx.post(url, headers=auth, json=too_many)
    assert r.status_code == 400 and r.json()["code"] == "InvalidParameter"
    r = httpx.post(
        url, headers=auth, json={"model": "qwen3-rerank", "input": {"query": "q", "documents": []}}
    )
    assert r.status_code == 400 and r.json()["code"] == "BadRequest.EmptyInput"
    r = httpx.post(
        url, headers=auth, json={"model": "qwen-plus", "input": {"query": "q", "documents": ["d"]}}
    )
    assert r.status_code == 404 and r.json()["code"] == "ModelNotFound"
