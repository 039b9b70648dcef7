"""Bad documents fail their own ingestion with a clear last_error and leave the store intact;
a re-uploaded file replaces the old one's chunks; deleting removes them from search."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import openai
import pytest

from tests.gateway.knowledge import docs

GOOD = b"# Returns\n\nUnused items may be returned within 30 days for a full refund."


@pytest.fixture
def client(gateway_settings: Callable[..., Any], run_gateway: Callable[..., Any]) -> openai.OpenAI:
    settings = gateway_settings(
        knowledge={"max_file_bytes": 256 * 1024, "max_unzipped_bytes": 32 * 1024 * 1024}
    )
    server = run_gateway(settings)
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60)


def _ingest(client: openai.OpenAI, store_id: str, name: str, data: bytes) -> Any:
    uploaded = client.files.create(file=(name, data), purpose="assistants")
    return client.vector_stores.files.create_and_poll(file_id=uploaded.id, vector_store_id=store_id)


BAD = {
    "corrupt.pdf": (
        b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 9 0 R\nthis is not a pdf",
        "could not be read",
    ),
    "truncated.pdf": (docs.pdf(["Hello there"])[:120], "could not be read"),
    "locked.pdf": (docs.encrypted_pdf("Secret refund policy"), "password-protected"),
    "bomb.docx": (docs.zip_bomb("word/document.xml"), "zip bomb"),
    "bomb.xlsx": (docs.zip_bomb("xl/worksheets/sheet1.xml"), "zip bomb"),
    "notzip.docx": (b"PK\x03\x04 but not really a zip file", "not a valid Office"),
    "empty.txt": (b"", "0 bytes"),
    "blank.md": (b"   \n\n  ", "no extractable text"),
    "binary.txt": (bytes(range(128, 256)) * 4, "neither UTF-8 nor GB18030"),
    "program.exe": (b"MZ\x90\x00", "unsupported extension"),
}


def test_every_bad_file_fails_alone_and_the_store_stays_intact(client: openai.OpenAI) -> None:
    store = client.vector_stores.create(name="kb")
    good = _ingest(client, store.id, "returns.md", GOOD)
    assert good.status == "completed"
    for name, (data, reason) in BAD.items():
        done = _ingest(client, store.id, name, data)
        assert done.status == "failed", name
        expected_code = "unsupported_file" if name.endswith(".exe") else "invalid_file"
        assert done.last_error is not None and done.last_error.code == expected_code, (name, done.last_error)
        assert reason in done.last_error.message, (name, done.last_error.message)
    counts = client.vector_stores.retrieve(store.id).file_counts
    assert (counts.completed, counts.failed, counts.total) == (1, len(BAD), len(BAD) + 1)
    page = client.vector_stores.search(store.id, query="return unused items refund")
    assert [h.filename for h in page.data] == ["returns.md"]


def test_over_the_size_limit_is_refused_at_upload(client: openai.OpenAI) -> None:
    store = client.vector_stores.create(name="kb")
    assert _ingest(client, store.id, "returns.md", GOOD).status == "completed"
    with pytest.raises(openai.APIStatusError) as caught:
        client.files.create(file=("huge.txt", b"x" * (300 * 1024)), purpose="assistants")
    assert caught.value.status_code == 413
    assert caught.value.body["code"] == "request_too_large"  # type: ignore[index]
    assert [f.filename for f in client.files.list().data] == ["returns.md"]
    assert client.vector_stores.search(store.id, query="refund").data


def test_reupload_replaces_chunks_and_delete_removes_them(client: openai.OpenAI) -> None:
    store = client.vector_stores.create(name="kb")
    old = _ingest(client, store.id, "policy.md", b"# Returns\n\nReturns are accepted within 30 days.")
    other = _ingest(client, store.id, "shipping.md", b"# Shipping\n\nParcels ship within 2 days.")
    assert old.status == other.status == "completed"
    new = _ingest(client, store.id, "policy.md", b"# Returns\n\nReturns are accepted within 14 days only.")
    assert new.status == "completed"
    texts = [
        h.content[0].text for h in client.vector_stores.search(store.id, query="returns accepted days").data
    ]
    assert any("14 days" in t for t in texts)
    assert not any("30 days" in t for t in texts), texts  # no stale answer
    attached = {f.id for f in client.vector_stores.files.list(store.id).data}
    assert attached == {new.id, other.id}
    # re-attaching the same file re-ingests it (a new generation), still one copy of its chunks
    again = client.vector_stores.files.create_and_poll(file_id=new.id, vector_store_id=store.id)
    assert again.status == "completed"
    hits = client.vector_stores.search(store.id, query="returns accepted days", max_num_results=10).data
    assert sum("14 days" in h.content[0].text for h in hits) == 1
    # deleting the file removes it from search at once
    client.files.delete(new.id)
    hits = client.vector_stores.search(store.id, query="returns accepted days", max_num_results=10).data
    assert all(h.file_id != new.id for h in hits)
    assert client.vector_stores.retrieve(store.id).file_counts.total == 1
