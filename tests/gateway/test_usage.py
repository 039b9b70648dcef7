"""Usage records: one row per request, written in batches off the request path, none lost at
shutdown, aggregated by key/tenant/route/provider and exported as CSV (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import csv
import io
import threading
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from gateway.db import create_engine, run_migrations, session_factory
from gateway.usage import UsageRecorder, record
from tests.gateway.saas_support import CHAT, database_url, query, saas  # noqa: F401


def _burst(gw: Any, keys: list[str], per_key: int) -> list[httpx.Response]:
    out: list[httpx.Response] = []
    lock = threading.Lock()

    def worker(key: str, i: int) -> None:
        body = {**CHAT, "messages": [{"role": "user", "content": f"question number {i} " * (1 + i % 3)}]}
        with httpx.Client(base_url=gw.url, headers={"authorization": f"Bearer {key}"}, timeout=60) as c:
            r = c.post("/v1/chat/completions", json=body)
        with lock:
            out.append(r)

    threads = [threading.Thread(target=worker, args=(k, i)) for k in keys for i in range(per_key)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_usage_matches_a_concurrent_burst(saas: Any) -> None:  # noqa: F811
    gw = saas()
    acme = gw.create_key(tenant="acme", scopes=["chat"])
    globex = gw.create_key(tenant="globex", scopes=["chat"])
    responses = _burst(gw, [acme["key"], globex["key"]], 12)
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200]
    by_tenant: dict[str, list[int]] = {"acme": [0, 0, 0], "globex": [0, 0, 0]}
    for r in responses:
        tenant = "acme" if r.request.headers["authorization"].endswith(acme["key"]) else "globex"
        u = r.json()["usage"]
        by_tenant[tenant][0] += 1
        by_tenant[tenant][1] += u["prompt_tokens"]
        by_tenant[tenant][2] += u["completion_tokens"]

    rows = gw.admin.get("/admin/usage", params={"group_by": "tenant", "bucket": "day"}).json()["data"]
    got = {r["group"]: [r["requests"], r["tokens_in"], r["tokens_out"]] for r in rows}
    assert got == by_tenant
    keys = gw.admin.get("/admin/usage", params={"group_by": "key", "bucket": "hour"}).json()["data"]
    assert {r["group"]: r["requests"] for r in keys} == {acme["id"]: 12, globex["id"]: 12}
    routes = gw.admin.get("/admin/usage", params={"group_by": "route", "bucket": "minute"}).json()["data"]
    assert sum(r["requests"] for r in routes if r["group"] == "/v1/chat/completions") == 24
    providers = gw.admin.get("/admin/usage", params={"group_by": "provider"}).json()["data"]
    assert {r["group"] for r in providers} == {"bailian:qwen-plus"}


def test_no_row_is_lost_at_graceful_shutdown(saas: Any, database_url: str) -> None:  # noqa: F811
    # A flush interval far longer than the test: every row is still buffered when the server stops.
    gw = saas(saas={"usage_flush_interval_s": 3600, "usage_batch_rows": 10_000})
    key = gw.create_key(tenant="acme", scopes=["chat", "tts"])
    responses = _burst(gw, [key["key"]], 15)
    speech = gw.client(key["key"]).post(
        "/v1/audio/speech", json={"model": "tts-1", "input": "Bye now.", "voice": "alloy"}
    )
    bad = gw.client(key["key"]).post("/v1/chat/completions", json={"model": "qwen-plus", "messages": []})
    assert speech.status_code == 200 and bad.status_code == 400
    assert gw.services.usage.pending == 17
    assert query(database_url, "SELECT count(*) FROM usage_records")[0][0] == 0
    gw.server.stop()  # graceful: lifespan shutdown flushes the buffer

    rows = query(
        database_url,
        "SELECT route, status, tokens_in, tokens_out, characters, tenant, key_id, request_id FROM usage_records",
    )
    assert len(rows) == 17
    chat = [r for r in rows if r[0] == "/v1/chat/completions" and r[1] == 200]
    assert len(chat) == 15
    assert sum(r[2] for r in chat) == sum(r.json()["usage"]["prompt_tokens"] for r in responses)
    assert sum(r[3] for r in chat) == sum(r.json()["usage"]["completion_tokens"] for r in responses)
    assert [r[4] for r in rows if r[0] == "/v1/audio/speech"] == [len("Bye now.")]
    assert [r[1] for r in rows if r[0] == "/v1/chat/completions" and r[1] != 200] == [400]
    assert {r[5] for r in rows} == {"acme"} and {r[6] for r in rows} == {key["id"]}
    assert {r[7] for r in rows} >= {r.headers["x-request-id"] for r in responses}


def test_usage_csv_export_and_filters(saas: Any) -> None:  # noqa: F811
    gw = saas()
    key = gw.create_key(tenant="acme", scopes=["chat"])
    c = gw.client(key["key"])
    for _ in range(3):
        assert c.post("/v1/chat/completions", json=CHAT).status_code == 200
    r = gw.admin.get("/admin/usage", params={"group_by": "tenant", "bucket": "day", "format": "csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert len(rows) == 1 and rows[0]["group"] == "acme" and rows[0]["requests"] == "3"
    assert rows[0]["bucket"].endswith("T00:00:00Z")
    future = gw.admin.get("/admin/usage", params={"since": "2999-01-01T00:00:00Z"}).json()["data"]
    assert future == []
    past = gw.admin.get("/admin/usage", params={"until": "0"}).json()["data"]
    assert past == []
    only = gw.admin.get("/admin/usage", params={"tenant": "nobody"}).json()["data"]
    assert only == []
    bad = gw.admin.get("/admin/usage", params={"since": "yesterday-ish"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "since"
    assert gw.admin.get("/admin/usage", params={"group_by": "colour"}).status_code == 422


class _FlakySessions:
    """A session factory whose database fails while ``down`` is set."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.down = False

    def __call__(self) -> Any:
        if self.down:
            raise ConnectionError("database unreachable")
        return self.real()


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
async def test_writer_keeps_rows_while_the_database_is_down(database_url: str) -> None:  # noqa: F811
    engine = create_engine(database_url)
    await run_migrations(engine)
    sessions = _FlakySessions(session_factory(engine))
    recorder = UsageRecorder(sessions, flush_interval_s=0.05, batch_rows=7)  # type: ignore[arg-type]
    await recorder.start()
    try:
        sessions.down = True
        for i in range(20):
            recorder.add({"request_id": f"r{i}", "tenant": "acme", "route": "/v1/x", "tokens_in": i})
        await asyncio.sleep(0.2)
        assert recorder.pending == 20 and recorder.written == 0
        sessions.down = False
    finally:
        await recorder.stop()
    async with engine.connect() as conn:
        rows = (await conn.execute(text("SELECT request_id, tokens_in FROM usage_records ORDER BY id"))).all()
    await engine.dispose()
    assert [r[0] for r in rows] == [f"r{i}" for i in range(20)]  # all of them, in order, once
    assert sum(r[1] for r in rows) == sum(range(20))


async def test_buffer_cap_drops_oldest_and_counts() -> None:
    recorder = UsageRecorder(None, buffer_rows=5, batch_rows=100)  # type: ignore[arg-type]
    for i in range(8):
        recorder.add({"request_id": f"r{i}"})
    assert recorder.pending == 5 and recorder.dropped == 3


def test_record_adds_measures_and_rejects_unknown_fields() -> None:
    from starlette.requests import Request

    req = Request({"type": "http", "headers": [], "method": "POST", "path": "/v1/x"})
    record(req, tokens_in=3, model="m")
    record(req, tokens_in=4, characters=2)
    assert req.scope["talkgate.ctx"].extra["usage"] == {"tokens_in": 7, "model": "m", "characters": 2}
    with pytest.raises(TypeError):
        record(req, cost_usd=1)
