"""Admission against a key's limits that a client cannot dodge (issue 18 items 3 and 4).

Tokens per minute are estimated from the body whatever its framing, and a request that could
never fit a key's minute is refused; the key's concurrency slot is taken once a JSON body is in,
so slow or stalled uploads hold no slot, and a stalled multipart body gives its slot back."""

from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import orjson
import pytest

from tests.gateway.saas_support import database_url, saas  # noqa: F401

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def prompt(words: int) -> dict[str, Any]:
    text = " ".join(f"word{i % 97}" for i in range(words))
    return {"model": "qwen-plus", "messages": [{"role": "user", "content": text}], "max_tokens": 16}


def attack(gw: Any, key: str, body: dict[str, Any], *, chunked: bool, n: int = 10) -> list[int]:
    """``n`` parallel requests of ``body``; their statuses."""
    raw = orjson.dumps(body)

    def one(_: int) -> int:
        headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
        # An iterator body makes httpx send Transfer-Encoding: chunked, with no Content-Length.
        content: Any = iter([raw[: len(raw) // 2], raw[len(raw) // 2 :]]) if chunked else raw
        return httpx.post(
            f"{gw.url}/v1/chat/completions", content=content, headers=headers, timeout=60
        ).status_code

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def test_chunked_bodies_do_not_bypass_tokens_per_minute(saas: Any, sim: Any) -> None:  # noqa: F811
    gw = saas()
    huge = prompt(20_000)  # ~26,000 tokens: more than a 2,000 tpm key may ever spend in a minute
    for chunked in (False, True):
        key = gw.create_key(scopes=["chat"], tpm=2000)["key"]
        sim.clear_requests()
        statuses = attack(gw, key, huge, chunked=chunked)
        assert statuses == [400] * 10, statuses
        assert sim.requests("generation") == []  # nothing reached the upstream
    r = gw.client(gw.create_key(scopes=["chat"], tpm=2000)["key"]).post("/v1/chat/completions", json=huge)
    error = r.json()["error"]
    assert error["code"] == "request_exceeds_tpm" and "2000 tokens per minute" in error["message"]

    # Requests that fit one at a time: the chunked ones are admitted no more often.
    fitting = prompt(700)  # ~1,100 tokens with max_tokens: one per 2,000-token minute, then 429
    admitted = {}
    for chunked in (False, True):
        key = gw.create_key(scopes=["chat"], tpm=2000)["key"]
        statuses = attack(gw, key, fitting, chunked=chunked)
        assert set(statuses) <= {200, 429}, statuses
        admitted[chunked] = statuses.count(200)
    assert 1 <= admitted[True] <= admitted[False] <= 2, admitted


def raw_post(gw: Any, key: str, path: str, content_type: str, first_bytes: bytes) -> socket.socket:
    """A POST that declares 100,000 bytes and then stops after ``first_bytes``."""
    sock = socket.create_connection(("127.0.0.1", int(gw.url.rsplit(":", 1)[1])), timeout=30)
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: 100000\r\n\r\n".encode()
        + first_bytes
    )
    return sock


def test_stalled_json_bodies_hold_no_concurrency_slot(saas: Any) -> None:  # noqa: F811
    gw = saas(limits={"body_idle_timeout_s": 30})
    key = gw.create_key(scopes=["chat"], concurrency=2)["key"]
    stalled = [raw_post(gw, key, "/v1/chat/completions", "application/json", b"{") for _ in range(4)]
    time.sleep(0.5)
    client = gw.client(key)
    for _ in range(3):  # the key's two slots are free: its real requests go through
        r = client.post("/v1/chat/completions", json=prompt(5))
        assert r.status_code == 200, r.text
    for sock in stalled:
        sock.close()


def test_a_stalled_multipart_body_gives_its_slot_back(saas: Any) -> None:  # noqa: F811
    gw = saas(limits={"body_idle_timeout_s": 2})
    key = gw.create_key(scopes=["asr"], concurrency=1)["key"]
    boundary = "XyZ"
    first = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\nRIFF'.encode()
    )
    sock = raw_post(gw, key, "/v1/audio/transcriptions", f"multipart/form-data; boundary={boundary}", first)
    time.sleep(0.5)
    busy = gw.client(key).post(
        "/v1/audio/transcriptions", files={"file": ("a.wav", b"x")}, data={"model": "whisper-1"}
    )
    assert busy.status_code == 429  # the upload holds the key's one slot while it is arriving
    start = time.monotonic()
    sock.settimeout(15)
    answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert time.monotonic() - start < 2 + 5
    sock.close()
    time.sleep(0.2)
    freed = gw.client(key).post(
        "/v1/audio/transcriptions", files={"file": ("a.wav", b"x")}, data={"model": "whisper-1"}
    )
    assert freed.status_code == 400  # past admission now: the slot was given back (the file is bad)
