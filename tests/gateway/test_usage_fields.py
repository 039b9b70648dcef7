"""Usage rows that bill what was really produced: streams cut by the client or the upstream, the
model the client asked for, and the gateway's own request id."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.gateway.saas_support import CHAT, database_url, query, saas  # noqa: F401
from tests.sounds import tone_wav

COLUMNS = "route, status, tokens_in, tokens_out, model, request_id, characters"
LONG_ANSWER = " ".join(f"word{i}" for i in range(300))  # ~6 s at 20 ms a token
STORY = [{"role": "user", "content": "tell me a long story"}]


def _rows(gw: Any, url: str, count: int, timeout_s: float = 10.0) -> list[tuple[Any, ...]]:
    """The usage rows once ``count`` of them are in the database (GET /admin/usage flushes)."""
    deadline = time.monotonic() + timeout_s
    while True:
        assert gw.admin.get("/admin/usage").status_code == 200
        rows = query(url, f"SELECT {COLUMNS} FROM usage_records ORDER BY id")
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def _spy_on_tpm(gw: Any) -> tuple[list[int], list[int]]:
    """Records what the limiter charges up front and what it reconciles after each request."""
    limiter = gw.services.limiter
    charged: list[int] = []
    adjusted: list[int] = []
    acquire, adjust = limiter.acquire, limiter.adjust_tokens

    async def spy_acquire(key_id: str, limits: Any, tokens: int = 0) -> Any:
        charged.append(tokens)
        return await acquire(key_id, limits, tokens)

    async def spy_adjust(key_id: str, limits: Any, delta: int) -> Any:
        adjusted.append(delta)
        return await adjust(key_id, limits, delta)

    limiter.acquire, limiter.adjust_tokens = spy_acquire, spy_adjust
    return charged, adjusted


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_stream_the_client_drops_still_books_its_tokens(
    saas: Any,  # noqa: F811
    database_url: str,  # noqa: F811
    sim: Any,
) -> None:
    gw = saas()
    key = gw.create_key(scopes=["chat"], tpm=100_000)["key"]
    charged, adjusted = _spy_on_tpm(gw)
    sim.control(
        "PUT", "/sim/config", json={"token_delay_ms": 20, "answers": {"tell me a long story": LONG_ANSWER}}
    )
    try:
        body = {"model": "qwen-plus", "messages": STORY, "stream": True, "max_tokens": 1000}
        c = gw.client(key)
        received = 0
        with c.stream("POST", "/v1/chat/completions", json=body) as s:
            assert s.status_code == 200
            for line in s.iter_lines():
                received += '"delta":{"content":' in line
                if received >= 30:
                    break
        c.close()  # the client walks away long before the answer's ~300 tokens
        (row,) = _rows(gw, database_url, 1)
    finally:
        sim.control("DELETE", "/sim/config")
    route, status, tokens_in, tokens_out, model, _, _ = row
    assert (route, status, model) == ("/v1/chat/completions", 499, "qwen-plus")
    assert tokens_in > 0
    assert 30 <= tokens_out < 300, tokens_out  # what was produced until the disconnect, not the whole
    # The TPM reconciliation kept those tokens instead of refunding the whole up-front charge.
    assert len(charged) == 1 and len(adjusted) == 1
    assert charged[0] + adjusted[0] == tokens_in + tokens_out


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_stream_cut_upstream_books_its_tokens_with_the_error_status(
    saas: Any,  # noqa: F811
    database_url: str,  # noqa: F811
    sim: Any,
) -> None:
    gw = saas()
    c = gw.client(gw.create_key(scopes=["chat"], tpm=100_000)["key"])
    charged, adjusted = _spy_on_tpm(gw)
    sim.control("PUT", "/sim/config", json={"answers": {"tell me a long story": LONG_ANSWER}})
    sim.fault(service="generation", model="qwen-plus", cut_after=8)
    try:
        body = {"model": "qwen-plus", "messages": STORY, "stream": True, "max_tokens": 1000}
        r = c.post("/v1/chat/completions", json=body)
        assert r.status_code == 200 and '"error"' in r.text and "[DONE]" not in r.text
        (row,) = _rows(gw, database_url, 1)
    finally:
        sim.control("DELETE", "/sim/config")
    route, status, tokens_in, tokens_out, model, _, _ = row
    assert route == "/v1/chat/completions" and model == "qwen-plus"
    assert status >= 500, status  # the upstream break, not the 200 the response started with
    assert tokens_in > 0 and 1 <= tokens_out <= 8
    assert charged[0] + adjusted[0] == tokens_in + tokens_out


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_complete_stream_books_the_providers_usage(saas: Any, database_url: str) -> None:  # noqa: F811
    gw = saas()
    c = gw.client(gw.create_key(scopes=["chat"])["key"])
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    r = c.post("/v1/chat/completions", json=body)
    assert r.status_code == 200 and r.text.endswith("data: [DONE]\n\n")
    usage = [line for line in r.text.split("\n\n") if '"usage":{' in line][-1]
    (row,) = _rows(gw, database_url, 1)
    assert row[1] == 200
    assert f'"prompt_tokens":{row[2]},"completion_tokens":{row[3]}' in usage


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_rows_carry_the_requested_model_and_group_by_model(saas: Any, database_url: str) -> None:  # noqa: F811
    gw = saas()
    c = gw.client(gw.create_key(scopes=["chat", "tts", "asr", "talk", "avatars"])["key"])
    assert c.post("/v1/chat/completions", json={**CHAT, "model": "default"}).status_code == 200
    assert (
        c.post("/v1/chat/completions", json={**CHAT, "model": "qwen-turbo", "stream": True}).status_code
        == 200
    )
    speech = c.post("/v1/audio/speech", json={"model": "tts-1", "input": "Hi there.", "voice": "alloy"})
    assert speech.status_code == 200
    files = {"file": ("a.wav", tone_wav(1.0), "audio/wav")}
    assert c.post("/v1/audio/transcriptions", files=files, data={"model": "whisper-1"}).status_code == 200
    missing = c.post("/v1/chat/completions", json={**CHAT, "model": "no-such-model"})
    assert missing.status_code == 404
    rows = _rows(gw, database_url, 5)
    assert [(r[0], r[4]) for r in rows] == [
        ("/v1/chat/completions", "default"),
        ("/v1/chat/completions", "qwen-turbo"),
        ("/v1/audio/speech", "tts-1"),
        ("/v1/audio/transcriptions", "whisper-1"),
        # a model nobody serves is booked as one label, never as the client's string (issue 18)
        ("/v1/chat/completions", "(unknown)"),
    ]
    by_model = gw.admin.get("/admin/usage", params={"group_by": "model", "bucket": "day"})
    assert by_model.status_code == 200, by_model.text
    assert {r["group"]: r["requests"] for r in by_model.json()["data"]} == {
        "default": 1,
        "qwen-turbo": 1,
        "tts-1": 1,
        "whisper-1": 1,
        "(unknown)": 1,
    }


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_row_id_is_the_gateways_own_even_when_the_client_sends_one(
    saas: Any,  # noqa: F811
    database_url: str,  # noqa: F811
) -> None:
    gw = saas()
    c = gw.client(gw.create_key(scopes=["chat"])["key"])
    echoed = [
        c.post("/v1/chat/completions", json=CHAT, headers={"x-request-id": "same-id"}).headers["x-request-id"]
        for _ in range(2)
    ]
    assert echoed == ["same-id", "same-id"]  # a safe client id is echoed...
    rows = _rows(gw, database_url, 2)
    ids = [r[5] for r in rows]
    assert len(set(ids)) == 2 and "same-id" not in ids  # ...but the rows keep unique gateway ids
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


def test_meter_estimates_when_the_provider_reports_no_usage() -> None:
    """A local model reports usage only at the end: a cut stream is billed by an estimate."""
    from gateway.streaming import StreamMeter
    from providers.base import Usage

    meter = StreamMeter([{"role": "user", "content": "x" * 40}])
    meter.parts += ["abcd", "efgh", "ij"]
    pending: dict[str, Any] = {}
    meter.settle(pending)
    assert pending == {"tokens_in": 10 + 4, "tokens_out": 3, "status": 499}
    meter = StreamMeter([])
    meter.parts.append("abc")
    meter.usage = Usage(7, 2)
    meter.finished = True
    pending = {"tokens_in": 1}
    meter.settle(pending)
    assert pending == {"tokens_in": 8, "tokens_out": 2}  # the provider's counts; no status change
