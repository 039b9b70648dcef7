"""The contract headers on every /v1 response: success, streams, errors, audio."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.gateway import fake_providers
from tests.sounds import tone_wav

# shared fixtures (a gateway over scripted providers, and an httpx client for it)
client = fake_providers.client
fake_gateway = fake_providers.fake_gateway

CONTRACT = (
    "x-request-id",
    "x-talkgate-provider",
    "x-talkgate-fallback",
    "x-talkgate-cache",
    "x-talkgate-overhead-ms",
)
USER = [{"role": "user", "content": "hi"}]


def assert_contract(r: httpx.Response, provider: str) -> None:
    for name in CONTRACT:
        assert name in r.headers, f"{name} missing on {r.request.url.path} ({r.status_code})"
    assert r.headers["x-talkgate-provider"] == provider
    assert r.headers["x-talkgate-fallback"] in ("0", "1")
    assert r.headers["x-talkgate-cache"] in ("hit", "miss", "bypass")
    overhead = float(r.headers["x-talkgate-overhead-ms"])
    assert 0.0 <= overhead < 5000
    assert len(r.headers["x-request-id"]) >= 8


def test_plain_chat(client: httpx.Client) -> None:
    r = client.post("/v1/chat/completions", json={"model": "default", "messages": USER})
    assert r.status_code == 200
    assert_contract(r, "bailian:qwen-plus")
    assert r.headers["x-talkgate-fallback"] == "0"


def test_streamed_chat(client: httpx.Client) -> None:
    with client.stream(
        "POST", "/v1/chat/completions", json={"model": "default", "messages": USER, "stream": True}
    ) as r:
        assert r.status_code == 200
        assert_contract(r, "bailian:qwen-plus")
        assert r.headers["cache-control"] == "no-cache"
        assert "".join(r.iter_text()).endswith("data: [DONE]\n\n")


def test_client_request_id_is_echoed(client: httpx.Client) -> None:
    r = client.post(
        "/v1/chat/completions",
        json={"model": "default", "messages": USER},
        headers={"x-request-id": "trace-abc-123"},
    )
    assert r.headers["x-request-id"] == "trace-abc-123"


@pytest.mark.parametrize(
    "sent",
    [b"has space", b'quote"d', b"semi;colon", b"tab\there", b"x" * 65, "caf\u00e9".encode(), b"\xff\xfe"],
)
def test_unsafe_client_request_id_is_replaced(client: httpx.Client, sent: bytes) -> None:
    """Only ids matching ^[A-Za-z0-9._:-]{1,64}$ are echoed; anything else gets a fresh id."""
    r = client.post(
        "/v1/chat/completions",
        json={"model": "default", "messages": USER},
        headers=[(b"x-request-id", sent)],
    )
    assert r.status_code == 200
    echoed = r.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", echoed), echoed
    safe = "A.b_c:d-9" + "z" * 55  # 64 safe characters: echoed as sent
    assert client.get("/v1/models", headers={"x-request-id": safe}).headers["x-request-id"] == safe


def test_request_ids_are_unique(client: httpx.Client) -> None:
    ids = {client.get("/v1/models").headers["x-request-id"] for _ in range(5)}
    assert len(ids) == 5


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        ({"model": "nope", "messages": USER}, 404),
        ({"model": "default"}, 422),
        ({"model": "default", "messages": USER, "n": 3}, 400),
        ({"model": "default", "messages": [{"role": "user", "content": "[filter]"}]}, 400),
        ({"model": "default", "messages": [{"role": "user", "content": "[crash]"}]}, 500),
    ],
)
def test_errors_carry_the_headers(client: httpx.Client, payload: dict, status: int) -> None:
    r = client.post("/v1/chat/completions", json=payload)
    assert r.status_code == status
    assert_contract(r, r.headers.get("x-talkgate-provider", "?"))
    assert r.json()["error"]["message"]


def test_failed_upstream_names_no_provider(client: httpx.Client) -> None:
    r = client.post("/v1/chat/completions", json={"model": "nope", "messages": USER})
    assert r.headers["x-talkgate-provider"] == "none"


def test_malformed_json_carries_the_headers(client: httpx.Client) -> None:
    r = client.post("/v1/chat/completions", content=b"{")
    assert r.status_code == 400
    assert_contract(r, "none")


def test_models_list(client: httpx.Client) -> None:
    assert_contract(client.get("/v1/models"), "none")


def test_transcription(client: httpx.Client) -> None:
    r = client.post(
        "/v1/audio/transcriptions", files={"file": ("a.wav", tone_wav())}, data={"model": "whisper-1"}
    )
    assert r.status_code == 200
    assert_contract(r, "bailian:paraformer-realtime-v2")


def test_speech_stream(client: httpx.Client) -> None:
    with client.stream(
        "POST", "/v1/audio/speech", json={"model": "tts-1", "input": "hi", "response_format": "pcm"}
    ) as r:
        assert r.status_code == 200
        assert_contract(r, "bailian:cosyvoice-v2")
        assert r.headers["x-talkgate-sample-rate"] == "22050"
        assert len(r.read()) > 0


def test_upload_too_large_carries_the_headers(client: httpx.Client) -> None:
    r = client.post(
        "/v1/audio/transcriptions", files={"file": ("a.wav", b"\0" * 300_000)}, data={"model": "whisper-1"}
    )
    assert r.status_code == 413
    assert_contract(r, "none")


def test_non_v1_routes_get_only_the_request_id(client: httpx.Client) -> None:
    r = client.get("/healthz")
    assert "x-request-id" in r.headers
    assert "x-talkgate-provider" not in r.headers
