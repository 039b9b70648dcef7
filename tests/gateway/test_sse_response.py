"""SSEResponse: chunks ready together go out together, nothing waits for data not yet there,
the last chunk closes the body, and a client disconnect ends the stream quietly."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx

from gateway.app import create_app
from gateway.sse_response import LastChunk, SSEResponse


class Recorder:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def send(self, message: dict[str, Any]) -> None:
        self.messages.append(message)

    def bodies(self) -> list[tuple[bytes, bool]]:
        return [(m["body"], m["more_body"]) for m in self.messages if m["type"] == "http.response.body"]


async def never_disconnects() -> dict[str, Any]:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


def test_ready_chunks_are_batched_and_waiting_flushes_first() -> None:
    gate = asyncio.Event()
    after_last: list[str] = []
    rec = Recorder()
    seen_before_wait: list[list[tuple[bytes, bool]]] = []

    async def body() -> AsyncIterator[bytes]:
        yield b"a"
        yield b"b"  # ready in the same step as "a"
        seen_before_wait.append(rec.bodies())
        await gate.wait()  # must not hold "a" + "b" back while waiting
        yield b"c"
        yield LastChunk(b"d")
        after_last.append("resumed")

    async def main() -> None:
        task = asyncio.create_task(SSEResponse(body())({"type": "http"}, never_disconnects, rec.send))
        for _ in range(5):
            await asyncio.sleep(0)
        assert rec.bodies() == [(b"ab", True)]  # sent while the iterator waits
        gate.set()
        await asyncio.wait_for(task, 2)

    asyncio.run(main())
    assert seen_before_wait == [[]]  # "a" and "b" were still together when the iterator paused
    assert rec.messages[0]["type"] == "http.response.start"
    assert rec.bodies() == [(b"ab", True), (b"cd", False)]
    assert after_last == ["resumed"]  # the work after the last chunk (billing) still ran


def test_plain_end_sends_an_empty_final_body() -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"x"

    rec = Recorder()
    asyncio.run(SSEResponse(body())({"type": "http"}, never_disconnects, rec.send))
    assert rec.bodies() == [(b"x", False)]


def test_disconnect_cancels_the_stream_quietly_and_closes_the_iterator() -> None:
    closed: list[str] = []
    disconnect = asyncio.Event()

    async def receive() -> dict[str, Any]:
        await disconnect.wait()
        return {"type": "http.disconnect"}

    async def body() -> AsyncIterator[bytes]:
        try:
            yield b"first"
            await asyncio.Event().wait()  # an upstream that stalls: only the disconnect ends it
            yield b"never"
        finally:
            closed.append("closed")

    rec = Recorder()

    async def main() -> None:
        task = asyncio.create_task(SSEResponse(body())({"type": "http"}, receive, rec.send))
        for _ in range(5):
            await asyncio.sleep(0)
        disconnect.set()
        await asyncio.wait_for(task, 2)  # returns normally: not an error in the server log
        assert not task.cancelled()

    asyncio.run(main())
    assert rec.bodies() == [(b"first", True)]
    assert closed == ["closed"]


def test_chat_completions_is_served_by_the_lean_path(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TALKGATE_DATA_DIR", str(tmp_path))
    app = create_app()
    assert ("POST", "/v1/chat/completions") in app.fast_paths
    assert ("GET", "/v1/chat/completions") not in app.fast_paths


def test_the_lean_path_bypasses_fastapi_middleware_but_keeps_the_contract(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TALKGATE_DATA_DIR", str(tmp_path))
    app = create_app()

    async def main() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            bad = await client.post(
                "/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
            )
            # FastAPI builds its middleware stack on the first request it serves: still unbuilt.
            assert app.middleware_stack is None
            assert bad.status_code == 400
            assert bad.json()["error"]["type"] == "invalid_request_error"
            for header in ("x-request-id", "x-talkgate-provider", "x-talkgate-overhead-ms"):
                assert header in bad.headers
            models = await client.get("/v1/models")
            assert models.status_code == 200
            assert app.middleware_stack is not None
            assert "x-request-id" in models.headers

    asyncio.run(main())
