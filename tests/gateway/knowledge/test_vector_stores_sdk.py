"""The stock openai SDK against the gateway's files and vector-store API, on SQLite and PostgreSQL:
upload every format, poll to completed, search, delete; another tenant gets 404 for every id."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from tests.gateway.knowledge import docs
from tests.gateway.saas_support import ADMIN_KEY, database_url, saas  # noqa: F401

KNOWLEDGE = ["knowledge:read", "knowledge:write"]

FILES: dict[str, bytes] = {
    "returns.txt": b"Returns policy\n\nYou may return any unused item within 30 days of delivery for a full refund. "
    b"Refunds go back to the original payment method within 5 business days.",
    "shipping.md": "# Shipping\n\n## Delivery times\n\nStandard delivery takes 3 to 5 days. Express delivery "
    "arrives the next working day.\n\n## 运费\n\n订单满99元包邮，不满99元收取运费10元。".encode(),
    "warranty.html": b"<html><head><style>p{}</style></head><body><h1>Warranty</h1><p>Every blender has a "
    b"two-year warranty covering the motor.</p><script>var x=1;</script></body></html>",
    "manual.pdf": docs.pdf(["Cleaning the blender", "Rinse the jar with warm water after each use."]),
    "account.docx": docs.docx(
        "Account help", [("Password reset", "Use the forgot password link on the login page to reset it.")]
    ),
    "faq.xlsx": docs.xlsx(
        [
            ["问题", "答案"],
            ["如何申请发票？", "在订单详情页点击申请发票，电子发票将在24小时内发送到邮箱。"],
            ["可以修改收货地址吗？", "订单发货前可以在订单详情页修改收货地址。"],
        ]
    ),
    "faq.csv": b"question,answer\nDo you ship abroad?,We ship to 40 countries; see the shipping page.\n"
    b"Can I pay with PayPal?,Yes, PayPal and all major credit cards are accepted.\n",
}


def _client(gw: Any, tenant: str) -> openai.OpenAI:
    key = gw.create_key(tenant=tenant, scopes=KNOWLEDGE)["key"]
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=key, max_retries=0, timeout=60)


def _ingest(client: openai.OpenAI, store_id: str, name: str, data: bytes) -> Any:
    uploaded = client.files.create(file=(name, data), purpose="assistants")
    return client.vector_stores.files.create_and_poll(file_id=uploaded.id, vector_store_id=store_id)


def test_sdk_store_lifecycle_every_format(saas: Any) -> None:  # noqa: F811
    gw = saas()
    client = _client(gw, "acme")
    store = client.vector_stores.create(name="support", metadata={"team": "cs"})
    assert store.object == "vector_store" and store.name == "support"
    for name, data in FILES.items():
        done = _ingest(client, store.id, name, data)
        assert done.status == "completed", (name, done.last_error)
        assert done.last_error is None
    store = client.vector_stores.retrieve(store.id)
    assert store.file_counts.completed == len(FILES) and store.file_counts.total == len(FILES)
    assert store.usage_bytes > 0

    def top_file(query: str) -> str:
        page = client.vector_stores.search(store.id, query=query, max_num_results=3)
        assert page.data, query
        # the gateway is pointed at the simulator: dense (text-embedding-v4) + BM25, reranked
        extra = page.model_extra or {}
        assert (extra["search_mode"], extra["reranked"]) == ("hybrid", True)
        return page.data[0].filename

    assert top_file("how long does express delivery take") == "shipping.md"
    assert top_file("refund for returned item") == "returns.txt"
    assert top_file("blender motor warranty") == "warranty.html"
    assert top_file("rinse the jar with warm water") == "manual.pdf"
    assert top_file("reset my password") == "account.docx"
    assert top_file("怎么申请发票") == "faq.xlsx"
    assert top_file("pay with PayPal") == "faq.csv"
    assert top_file("满多少包邮") == "shipping.md"

    # one FAQ row is one chunk: the invoice answer does not carry the address question with it
    hit = client.vector_stores.search(store.id, query="申请发票", max_num_results=1).data[0]
    assert "发票" in hit.content[0].text and "收货地址" not in hit.content[0].text

    listed = client.vector_stores.files.list(store.id)
    assert {f.status for f in listed.data} == {"completed"} and len(listed.data) == len(FILES)
    assert store.id in [s.id for s in client.vector_stores.list().data]

    renamed = client.vector_stores.update(store.id, name="support-2")
    assert renamed.name == "support-2"

    # delete removes from search
    pdf_id = next(f.id for f in listed.data if client.files.retrieve(f.id).filename == "manual.pdf")
    client.vector_stores.files.delete(file_id=pdf_id, vector_store_id=store.id)
    page = client.vector_stores.search(store.id, query="rinse the jar with warm water", max_num_results=5)
    assert all(h.filename != "manual.pdf" for h in page.data)
    client.files.delete(pdf_id)
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(pdf_id)

    deleted = client.vector_stores.delete(store.id)
    assert deleted.deleted
    with pytest.raises(openai.NotFoundError):
        client.vector_stores.retrieve(store.id)


def test_other_tenant_gets_404_for_every_id(saas: Any) -> None:  # noqa: F811
    gw = saas()
    owner, other = _client(gw, "acme"), _client(gw, "globex")
    store = owner.vector_stores.create(name="private")
    done = _ingest(owner, store.id, "returns.txt", FILES["returns.txt"])
    file_id = done.id
    assert done.status == "completed"
    calls = [
        lambda: other.vector_stores.retrieve(store.id),
        lambda: other.vector_stores.update(store.id, name="x"),
        lambda: other.vector_stores.search(store.id, query="refund"),
        lambda: other.vector_stores.files.list(store.id),
        lambda: other.vector_stores.files.retrieve(file_id=file_id, vector_store_id=store.id),
        lambda: other.vector_stores.files.delete(file_id=file_id, vector_store_id=store.id),
        lambda: other.vector_stores.files.create(vector_store_id=store.id, file_id=file_id),
        lambda: other.files.retrieve(file_id),
        lambda: other.files.content(file_id),
        lambda: other.files.delete(file_id),
        lambda: other.vector_stores.delete(store.id),
    ]
    for call in calls:
        with pytest.raises(openai.NotFoundError):
            call()
    # the other tenant's own store cannot take the owner's file either
    mine = other.vector_stores.create(name="mine")
    with pytest.raises(openai.NotFoundError):
        other.vector_stores.files.create(vector_store_id=mine.id, file_id=file_id)
    assert store.id not in [s.id for s in other.vector_stores.list().data]
    # nor ground its chat answers in the owner's store
    chat_key = gw.create_key(tenant="globex", scopes=["chat", "knowledge:read"])["key"]
    chatter = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=chat_key, max_retries=0, timeout=60)
    with pytest.raises(openai.NotFoundError):
        chatter.chat.completions.create(
            model="qwen-plus",
            messages=[{"role": "user", "content": "refund"}],
            extra_body={"knowledge": {"vector_store_ids": [store.id]}},
        )
    assert file_id not in [f.id for f in other.files.list().data]
    # nothing of the owner's was touched
    assert owner.vector_stores.search(store.id, query="refund").data[0].file_id == file_id


def test_scopes_read_and_write(saas: Any) -> None:  # noqa: F811
    gw = saas()
    writer = _client(gw, "acme")
    store = writer.vector_stores.create(name="s")
    reader_key = gw.create_key(tenant="acme", scopes=["knowledge:read"])["key"]
    chat_key = gw.create_key(tenant="acme", scopes=["chat"])["key"]
    reader = httpx.Client(base_url=gw.url, headers={"authorization": f"Bearer {reader_key}"})
    chatter = httpx.Client(base_url=gw.url, headers={"authorization": f"Bearer {chat_key}"})
    try:
        assert reader.get(f"/v1/vector_stores/{store.id}").status_code == 200
        r = reader.post("/v1/vector_stores", json={"name": "nope"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_scope"
        assert chatter.get(f"/v1/vector_stores/{store.id}").status_code == 403
    finally:
        reader.close()
        chatter.close()


def test_file_batches_upload_and_poll(saas: Any) -> None:  # noqa: F811
    gw = saas()
    client, other = _client(gw, "acme"), _client(gw, "globex")
    store = client.vector_stores.create(name="batch")
    names = ["returns.txt", "shipping.md", "faq.csv"]
    batch = client.vector_stores.file_batches.upload_and_poll(
        vector_store_id=store.id, files=[(n, FILES[n]) for n in names]
    )
    assert batch.object == "vector_store.files_batch" and batch.status == "completed"
    assert (batch.file_counts.completed, batch.file_counts.total) == (3, 3)
    listed = client.vector_stores.file_batches.list_files(batch_id=batch.id, vector_store_id=store.id)
    assert len(listed.data) == 3 and {f.status for f in listed.data} == {"completed"}
    assert client.vector_stores.search(store.id, query="PayPal").data[0].filename == "faq.csv"
    with pytest.raises(openai.NotFoundError):
        other.vector_stores.file_batches.retrieve(batch_id=batch.id, vector_store_id=store.id)
    mine = other.vector_stores.create(name="mine")
    with pytest.raises(openai.NotFoundError):  # another tenant's file ids cannot be batched
        other.vector_stores.file_batches.create(vector_store_id=mine.id, file_ids=[listed.data[0].id])
