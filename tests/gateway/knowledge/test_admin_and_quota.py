"""Per-tenant storage quota on uploads, the admin storage view, and the knowledge metrics."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from tests.gateway.saas_support import ADMIN_KEY, database_url, saas  # noqa: F401

FAQ = b"question,answer\nHow do I reset my password?,Use the forgot password link on the login page.\n"


def _client(gw: Any, tenant: str) -> openai.OpenAI:
    key = gw.create_key(tenant=tenant, scopes=["knowledge:read", "knowledge:write", "chat"])["key"]
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=key, max_retries=0, timeout=60)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_quota_admin_view_and_metrics(saas: Any) -> None:  # noqa: F811
    gw = saas(knowledge={"tenant_quota_bytes": 1000, "tenant_quota_overrides": {"bigco": 10_000}})
    small, big = _client(gw, "acme"), _client(gw, "bigco")
    store = small.vector_stores.create(name="kb")
    uploaded = small.files.create(file=("faq.csv", FAQ), purpose="assistants")
    assert (
        small.vector_stores.files.create_and_poll(file_id=uploaded.id, vector_store_id=store.id).status
        == "completed"
    )
    broken = small.files.create(file=("broken.pdf", b"%PDF-1.4 nonsense"), purpose="assistants")
    failed = small.vector_stores.files.create_and_poll(file_id=broken.id, vector_store_id=store.id)
    assert failed.status == "failed"
    with pytest.raises(openai.PermissionDeniedError) as caught:
        small.files.create(file=("more.txt", b"x" * 900), purpose="assistants")
    assert caught.value.body["code"] == "storage_quota_exceeded"  # type: ignore[index]
    assert big.files.create(file=("more.txt", b"x" * 900), purpose="assistants").bytes == 900  # its own quota

    small.vector_stores.search(store.id, query="reset password")
    nothing = {"type": "eq", "key": "lang", "value": "fr"}  # no file has this attribute: no hit
    assert small.vector_stores.search(store.id, query="reset password", filters=nothing).data == []
    reply = small.chat.completions.create(
        model="qwen-plus",
        messages=[{"role": "user", "content": "What is the capital of Australia?"}],
        extra_body={"knowledge": {"vector_store_ids": [store.id]}},
    )
    assert (reply.model_extra or {})["knowledge"]["answered"] is False

    view = {row["tenant"]: row for row in gw.admin.get("/admin/knowledge").json()["data"]}
    assert view["acme"]["bytes"] == len(FAQ) + len(b"%PDF-1.4 nonsense")
    assert (view["acme"]["vector_stores"], view["acme"]["failed_files"], view["acme"]["quota_bytes"]) == (
        1,
        1,
        1000,
    )
    assert view["acme"]["chunks"] == 1 and view["bigco"]["quota_bytes"] == 10_000
    assert gw.client(small.api_key).get("/admin/knowledge").status_code == 403

    metrics = gw.admin.get("/metrics").text
    for line in (
        'talkgate_knowledge_ingested_files_total{tenant="acme"} 1.0',
        'talkgate_knowledge_ingestion_failures_total{code="invalid_file",tenant="acme"} 1.0',
        'talkgate_knowledge_searches_total{outcome="hit",tenant="acme"} 2.0',  # the search, the chat's
        'talkgate_knowledge_searches_total{outcome="empty",tenant="acme"} 1.0',
        'talkgate_knowledge_grounded_answers_total{outcome="declined",tenant="acme"} 1.0',
        f'talkgate_knowledge_storage_bytes{{tenant="acme"}} {float(view["acme"]["bytes"])}',
    ):
        assert line in metrics, line
    assert "talkgate_knowledge_search_seconds_bucket" in metrics
