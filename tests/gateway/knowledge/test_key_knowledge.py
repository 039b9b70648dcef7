"""Who may ground a request in vector stores, and per-key default stores (gateway/knowledge/spec.py).

Naming stores in chat, /v1/talk or a realtime ``session.update`` needs ``knowledge:read``; a key
without it gets a 403 (an ``error`` event in realtime). A key may carry default stores, set with
the admin API or ``talkgate keys create --knowledge`` and checked against its tenant; requests that name none use them, and
``{"vector_store_ids": []}`` opts out.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from gateway.cli import main as cli_main
from tests.conftest import SimHandle
from tests.gateway.realtime.test_realtime import _until
from tests.gateway.saas_support import database_url, saas  # noqa: F401
from tests.gateway.test_talk import _avatar

RETURNS = "# Returns\n\nUnused items may be returned within 30 days of delivery for a full refund."
SHIPPING = "# Shipping\n\nStandard shipping takes 3 to 5 working days; express arrives the next day."
QUESTION = "Within how many days can unused items be returned for a refund?"
ANSWER = "Within 30 days of delivery [1]."
WRITER = ["knowledge:read", "knowledge:write", "chat", "avatars"]


def _openai(gw: Any, key: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{gw.url}/v1",
        websocket_base_url=f"ws://127.0.0.1:{gw.server.port}/v1",
        api_key=key,
        max_retries=0,
        timeout=60,
    )


def _store(client: openai.OpenAI, name: str, text: str) -> str:
    store = client.vector_stores.create(name=name)
    uploaded = client.files.create(file=(f"{name}.md", text.encode()), purpose="assistants")
    done = client.vector_stores.files.create_and_poll(file_id=uploaded.id, vector_store_id=store.id)
    assert done.status == "completed", done.last_error
    return store.id


def _chat(client: openai.OpenAI, **extra: Any) -> Any:
    return client.chat.completions.create(
        model="qwen-plus", messages=[{"role": "user", "content": QUESTION}], extra_body=extra or None
    )


def _grounded_prompt(sim: SimHandle) -> bool:
    """Whether the last model call was given knowledge-base passages."""
    call = sim.requests("generation")[-1]
    return any("Passages:" in str(m.get("content")) for m in call["body"]["input"]["messages"])


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_naming_stores_needs_knowledge_read(saas: Any, sim: SimHandle) -> None:  # noqa: F811
    gw = saas()
    writer = gw.create_key(scopes=WRITER)["key"]
    store_id = _store(_openai(gw, writer), "returns", RETURNS)
    plain = gw.create_key(scopes=["chat", "talk", "realtime"])["key"]
    knowledge = {"vector_store_ids": [store_id]}
    sim.control("PUT", "/sim/config", json={"answers": {QUESTION: ANSWER}}).raise_for_status()
    try:
        with pytest.raises(openai.PermissionDeniedError) as caught:
            _chat(_openai(gw, plain), knowledge=knowledge)
        error = caught.value.body
        assert error["type"] == "permission_error" and error["code"] == "insufficient_scope"  # type: ignore[index]
        assert "knowledge:read" in error["message"] and error["param"] == "knowledge"  # type: ignore[index]
        # without stores, or opting out, the same key chats as before (nothing grounded)
        sim.clear_requests()
        for extra in ({}, {"knowledge": {"vector_store_ids": []}}):
            reply = _chat(_openai(gw, plain), **extra)
            assert "knowledge" not in (reply.model_extra or {}) and not _grounded_prompt(sim)
        # a key with the scope gets the grounded answer
        reader = gw.create_key(scopes=["chat", "knowledge:read"])["key"]
        reply = _chat(_openai(gw, reader), knowledge=knowledge)
        assert [c["filename"] for c in (reply.model_extra or {})["citations"]] == ["returns.md"]

        with httpx.Client(base_url=gw.url, timeout=120) as http:
            avatar_id = _avatar(gw.client(writer))
            talk = {"text": QUESTION, "avatar_id": avatar_id, "knowledge": knowledge}
            r = http.post("/v1/talk", json=talk, headers={"authorization": f"Bearer {plain}"})
            assert r.status_code == 403, r.text
            assert r.json()["error"]["code"] == "insufficient_scope"

        with _openai(gw, plain).realtime.connect(model="gpt-realtime") as conn:
            conn.recv()
            conn.session.update(session={"type": "realtime", "knowledge": knowledge})
            refused = conn.recv()
            assert refused.type == "error", refused
            assert (refused.error.type, refused.error.code) == ("permission_error", "insufficient_scope")
            assert refused.error.param == "session.knowledge"
            conn.session.update(session={"type": "realtime", "instructions": "Be brief."})
            updated = conn.recv()  # the session stays open and ungrounded
            assert updated.type == "session.updated" and updated.session.model_extra.get("knowledge") is None
    finally:
        sim.control("DELETE", "/sim/config")


def test_key_default_stores(saas: Any, sim: SimHandle) -> None:  # noqa: F811
    gw = saas()
    returns = _store(_openai(gw, gw.create_key(scopes=WRITER)["key"]), "returns", RETURNS)
    shipping = _store(_openai(gw, gw.create_key(scopes=WRITER)["key"]), "shipping", SHIPPING)
    elsewhere = _store(_openai(gw, gw.create_key(tenant="other", scopes=WRITER)["key"]), "x", RETURNS)
    admin = gw.admin

    # stores are checked against the key's tenant when the default is set
    for ids in ([elsewhere], ["vs_nope"], [returns, elsewhere]):
        body = {"tenant": "acme", "scopes": ["chat"], "knowledge": {"vector_store_ids": ids}}
        r = admin.post("/admin/keys", json=body)
        assert r.status_code == 404 and r.json()["error"]["code"] == "vector_store_not_found", r.text
    r = admin.post(
        "/admin/keys", json={"tenant": "acme", "scopes": ["chat"], "knowledge": {"vector_store_ids": []}}
    )
    assert r.status_code == 422, r.text  # the admin API's validation status (an empty default is no default)
    created = gw.create_key(
        scopes=["chat", "realtime"], knowledge={"vector_store_ids": [returns], "max_num_results": 3}
    )
    assert created["knowledge"] == {"vector_store_ids": [returns], "max_num_results": 3}
    listed = {k["id"]: k for k in admin.get("/admin/keys").json()["data"]}
    assert listed[created["id"]]["knowledge"] == created["knowledge"]
    client = _openai(gw, created["key"])  # no knowledge:read: defaults are the operator's choice

    sim.control("PUT", "/sim/config", json={"answers": {QUESTION: ANSWER}}).raise_for_status()
    try:
        sim.clear_requests()
        reply = _chat(client)
        extra = reply.model_extra or {}
        assert extra["knowledge"]["vector_store_ids"] == [returns] and _grounded_prompt(sim)
        assert [c["filename"] for c in extra["citations"]] == ["returns.md"]
        opted_out = _chat(client, knowledge={"vector_store_ids": []})
        assert "knowledge" not in (opted_out.model_extra or {}) and not _grounded_prompt(sim)

        with client.realtime.connect(model="gpt-realtime") as conn:
            conn.recv()
            conn.conversation.item.create(
                item={
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": QUESTION}],
                }
            )
            _until(conn, "conversation.item.done")
            conn.response.create()
            served = _until(conn, "response.done")[-1].response.model_extra["talkgate"]
            assert [c["filename"] for c in served["citations"]] == ["returns.md"]

        # replaced (the same checks), then cleared
        r = admin.put(f"/admin/keys/{created['id']}/knowledge", json={"vector_store_ids": [elsewhere]})
        assert r.status_code == 404, r.text
        r = admin.put(f"/admin/keys/{created['id']}/knowledge", json={"vector_store_ids": [shipping]})
        assert r.status_code == 200 and r.json()["knowledge"]["vector_store_ids"] == [shipping], r.text
        now = _chat(client).model_extra or {}  # the shipping store has no returns policy: declined
        assert now["knowledge"]["answered"] is False and now["citations"] == []
        assert (
            admin.put("/admin/keys/key_nope/knowledge", json={"vector_store_ids": [shipping]}).status_code
            == 404
        )
        r = admin.delete(f"/admin/keys/{created['id']}/knowledge")
        assert r.status_code == 200 and r.json()["knowledge"] is None
        sim.clear_requests()
        assert "knowledge" not in (_chat(client).model_extra or {}) and not _grounded_prompt(sim)
    finally:
        sim.control("DELETE", "/sim/config")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_keys_cli_sets_default_stores(
    saas: Any,  # noqa: F811
    database_url: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    gw = saas()
    returns = _store(_openai(gw, gw.create_key(scopes=WRITER)["key"]), "returns", RETURNS)
    elsewhere = _store(_openai(gw, gw.create_key(tenant="other", scopes=WRITER)["key"]), "x", RETURNS)
    monkeypatch.setenv("TALKGATE_DATABASE_URL", database_url)
    create = ["keys", "create", "--tenant", "acme", "--scopes", "chat", "--json"]
    assert cli_main([*create, "--knowledge", f"{returns}, {returns}", "--knowledge-results", "3"]) == 0
    created = json.loads(capsys.readouterr().out)
    assert created["knowledge"] == {"vector_store_ids": [returns], "max_num_results": 3}
    listed = {k["id"]: k for k in gw.admin.get("/admin/keys").json()["data"]}
    assert listed[created["id"]]["knowledge"] == created["knowledge"]  # what the gateway serves

    refused = [
        (["--knowledge", elsewhere], f"no vector store {elsewhere} of tenant 'acme'"),
        (["--knowledge", f"{returns},vs_nope"], "no vector store vs_nope"),
        (["--knowledge", " , "], "1 to 10 vector store ids"),
        (["--knowledge", returns, "--knowledge-results", "21"], "between 1 and 20"),
        (["--knowledge-results", "3"], "--knowledge-results needs --knowledge"),
    ]
    for extra, message in refused:
        assert cli_main([*create, *extra]) == 2, extra
        assert message in capsys.readouterr().err
    assert len(gw.admin.get("/admin/keys").json()["data"]) == len(listed)  # the refusals made no key
