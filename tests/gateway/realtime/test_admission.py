"""Realtime sessions and API keys: the ``realtime`` scope, browser subprotocol auth, the key's
concurrency slot held for the session's life, tokens-per-minute per turn, usage rows per turn."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from tests.conftest import SimHandle
from tests.gateway.saas_support import Gateway, database_url, query, saas, saas_redis_url  # noqa: F401

USAGE = (
    "SELECT route, status, request_id, tokens_in, tokens_out, characters, audio_seconds FROM usage_records"
)


def _url(gw: Gateway) -> str:
    return f"ws://127.0.0.1:{gw.server.port}/v1/realtime?model=gpt-realtime"


def _connect(gw: Gateway, key: str, browser: bool = False) -> Any:
    if browser:  # the key as a subprotocol, as a browser's WebSocket sends it
        return ws_connect(_url(gw), subprotocols=["realtime", f"openai-insecure-api-key.{key}"])
    return ws_connect(_url(gw), additional_headers={"Authorization": f"Bearer {key}"})


def _created(ws: Any) -> str:
    """The session id of the session.created event."""
    created = json.loads(ws.recv(timeout=10))
    assert created["type"] == "session.created"
    return str(created["session"]["id"])


def _refused(gw: Gateway, key: str) -> tuple[int, dict[str, Any]]:
    with pytest.raises(InvalidStatus) as info:
        ws_connect(_url(gw), additional_headers={"Authorization": f"Bearer {key}"}).close()
    return info.value.response.status_code, json.loads(info.value.response.body)["error"]


def _ask(ws: Any, text: str) -> list[dict[str, Any]]:
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    ws.send(json.dumps({"type": "conversation.item.create", "item": item}))
    ws.send(json.dumps({"type": "response.create"}))
    events = []
    while not events or events[-1]["type"] not in ("response.done",):
        events.append(json.loads(ws.recv(timeout=30)))
        if events[-1]["type"] == "error" and events[-1]["error"]["code"] != "internal_error":
            return events
    return events


def _rows(gw: Gateway, url: str, count: int) -> list[Any]:
    deadline = time.monotonic() + 10
    while True:
        assert gw.admin.get("/admin/usage").status_code == 200  # flushes the buffer
        rows = query(url, USAGE + " WHERE route = '/v1/realtime' ORDER BY id")
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def test_scope_subprotocol_and_the_sessions_slot(
    saas: Callable[..., Gateway],  # noqa: F811
    saas_redis_url: str,  # noqa: F811
) -> None:
    gw = saas(redis_url=saas_redis_url)
    key = gw.create_key(scopes=["realtime"], concurrency=1)["key"]
    chat_only = gw.create_key(scopes=["chat"])["key"]
    status, error = _refused(gw, chat_only)
    assert status == 403 and "'realtime' scope" in error["message"]

    with _connect(gw, key, browser=True) as ws:
        assert ws.subprotocol == "realtime"
        _created(ws)
        status, error = _refused(gw, key)  # the one slot is held by the open session
        assert status == 429 and error["code"] == "rate_limit_exceeded" and "1 concurrent" in error["message"]
    deadline = time.monotonic() + 5
    while True:  # the slot is released when the server sees the close
        try:
            with _connect(gw, key) as ws:
                _created(ws)
            break
        except InvalidStatus:
            assert time.monotonic() < deadline, "the closed session kept its slot"
            time.sleep(0.05)


def test_usage_rows_per_turn_and_tpm_per_turn(
    saas: Callable[..., Gateway],  # noqa: F811
    database_url: str,  # noqa: F811
    sim: SimHandle,
) -> None:
    gw = saas()
    key = gw.create_key(scopes=["realtime"], tpm=300)["key"]
    sim.control("PUT", "/sim/config", json={"answers": {"Hello there.": "Hello Ada. Nice to meet you."}})
    with _connect(gw, key) as ws:
        _tpm_turns(gw, ws, _created(ws), database_url)


def _tpm_turns(gw: Gateway, ws: Any, session_id: str, database_url: str) -> None:  # noqa: F811
    ws.send(json.dumps({"type": "session.update", "session": {"type": "realtime", "max_output_tokens": 64}}))
    assert json.loads(ws.recv(timeout=10))["type"] == "session.updated"
    done = _ask(ws, "Hello there.")[-1]
    assert done["type"] == "response.done" and done["response"]["status"] == "completed"
    rows = _rows(gw, database_url, 1)
    assert len(rows) == 1
    route, status, request_id, tokens_in, tokens_out, characters, _ = rows[0]
    assert (route, status) == ("/v1/realtime", 200)
    assert request_id == f"{session_id}:{done['response']['id']}"  # the session id is on every row
    assert tokens_in > 0 and tokens_out > 0
    assert characters == len("Hello Ada.") + len("Nice to meet you.")  # the sentences spoken

    # A turn that could never fit the key's tokens per minute is refused with an error event.
    ws.send(
        json.dumps({"type": "session.update", "session": {"type": "realtime", "max_output_tokens": 1000}})
    )
    assert json.loads(ws.recv(timeout=10))["type"] == "session.updated"
    refused = _ask(ws, "Hello there.")
    error = next(e for e in refused if e["type"] == "error")["error"]
    assert error["code"] == "request_exceeds_tpm" and "300" in error["message"]


def test_a_dropped_session_books_what_was_produced(
    saas: Callable[..., Gateway],  # noqa: F811
    database_url: str,  # noqa: F811
    sim: SimHandle,
) -> None:
    gw = saas()
    key = gw.create_key(scopes=["realtime"])["key"]
    story = " ".join(f"word{i}." for i in range(200))
    sim.control("PUT", "/sim/config", json={"answers": {"Tell me a story.": story}, "token_delay_ms": 30})
    with _connect(gw, key) as ws:
        session_id = _created(ws)
        text_only = {"type": "realtime", "output_modalities": ["text"]}
        ws.send(json.dumps({"type": "session.update", "session": text_only}))
        ws.recv(timeout=10)
        question = {"type": "input_text", "text": "Tell me a story."}
        item = {"type": "message", "role": "user", "content": [question]}
        ws.send(json.dumps({"type": "conversation.item.create", "item": item}))
        ws.send(json.dumps({"type": "response.create"}))
        seen = 0
        while seen < 10:
            if json.loads(ws.recv(timeout=30))["type"] == "response.output_text.delta":
                seen += 1
    # the client is gone mid-answer
    rows = _rows(gw, database_url, 1)
    assert len(rows) == 1
    _, status, request_id, _, tokens_out, _, _ = rows[0]
    assert status == 499 and request_id.startswith(f"{session_id}:resp_")
    assert 3 <= tokens_out < 200  # what was streamed before the drop, not the whole story


def test_two_tenants_sessions_never_share_history(
    saas: Callable[..., Gateway],  # noqa: F811
    sim: SimHandle,
) -> None:
    gw = saas()
    first = gw.create_key(tenant="acme", scopes=["realtime"])["key"]
    second = gw.create_key(tenant="globex", scopes=["realtime"])["key"]
    text_only = {"type": "session.update", "session": {"type": "realtime", "output_modalities": ["text"]}}
    with _connect(gw, first) as a, _connect(gw, second) as b:
        for ws in (a, b):
            _created(ws)
            ws.send(json.dumps(text_only))
            ws.recv(timeout=10)
        assert _ask(a, "My account number is 778899.")[-1]["response"]["status"] == "completed"
        sim.clear_requests()
        assert _ask(b, "What is my account number?")[-1]["response"]["status"] == "completed"
        [call] = sim.requests("generation")
        sent = json.dumps(call["body"])
        assert "What is my account number?" in sent and "778899" not in sent
