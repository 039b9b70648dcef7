"""HTTP plumbing of the simulated services: fault responses (hang, drop, cut streams) and pacing.

The DashScope wire itself (key, bodies, error bodies, SSE framing) is ``gateway.dashscope``,
shared with the gateway's front door.

Responses are written straight to ASGI (no per-request task groups) because the compatible-mode
endpoint is a latency-benchmark upstream. Abrupt drops return from the ASGI callable without
finishing the response, which makes uvicorn close the socket mid-body, like a real broken upstream.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import AsyncIterator, Callable

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway.dashscope.sse import error_event
from gateway.sim.state import Fault

HANG_MAX_S = 600.0

# Set while the sim deliberately leaves a response unfinished, so uvicorn's complaint is not logged.
_deliberate_drop: contextvars.ContextVar[bool] = contextvars.ContextVar("sim_deliberate_drop", default=False)


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (_deliberate_drop.get() and "without completing" in str(record.msg))


def mark_deliberate_drop() -> None:
    """The current ASGI call ends unfinished on purpose (a cut, a hang, a denied WS handshake)."""
    _deliberate_drop.set(True)


def install_log_filter() -> None:
    """Hide uvicorn's "returned without completing response/handshake" line for deliberate drops."""
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _DropNoise) for f in logger.filters):
        logger.addFilter(_DropNoise())


def fault_headers(fault: Fault | None) -> dict[str, str] | None:
    if fault is not None and fault.status == 429 and fault.retry_after is not None:
        seconds = fault.retry_after
        return {"Retry-After": str(int(seconds)) if seconds == int(seconds) else f"{seconds:g}"}
    return None


def cut_error_event(fault: Fault | None, request_id: str) -> bytes | None:
    """The ``event:error`` a ``cut_after`` fault with a status sends where it cuts a native stream."""
    if fault is None or fault.cut_after is None or fault.status is None:
        return None
    return error_event(fault.cut_after + 1, fault.status, fault.error_code, fault.error_message, request_id)


async def wait_for_disconnect(receive: Receive, limit_s: float = HANG_MAX_S) -> None:
    """Block until the client goes away (after the body was read, uvicorn's receive waits for it)."""

    async def _wait() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    try:
        await asyncio.wait_for(_wait(), timeout=limit_s)
    except TimeoutError:
        pass


class HangResponse(Response):
    """Accepts the request and never answers; the connection is dropped when the client gives up."""

    def __init__(self) -> None:
        super().__init__(status_code=200)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await wait_for_disconnect(receive)
        _deliberate_drop.set(True)
        # Close without a response: uvicorn would otherwise answer 500 for a callable that sent nothing.
        await send({"type": "http.response.start", "status": 200, "headers": []})


class DropResponse(Response):
    """Starts a response with a long Content-Length and drops the socket after ``partial`` bytes."""

    def __init__(self, partial: bytes = b"") -> None:
        super().__init__(status_code=200)
        self.partial = partial

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", b"application/json"), (b"content-length", b"1048576")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        if self.partial:
            await send({"type": "http.response.body", "body": self.partial, "more_body": True})
        _deliberate_drop.set(True)


ChunkSource = Callable[[], AsyncIterator[bytes]]


class SimStream(Response):
    """A streamed body written directly to ASGI, with optional mid-stream fault handling.

    ``cut_after``: after that many chunks, either send ``error_chunk`` and end cleanly (a mid-stream
    error) or, when ``error_chunk`` is None, drop the connection abruptly.
    """

    def __init__(
        self,
        chunks: ChunkSource,
        media_type: str = "text/event-stream",
        cut_after: int | None = None,
        error_chunk: bytes | None = None,
        watch_disconnect: bool = False,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status_code=200, headers=headers, media_type=media_type)
        # Response() adds content-length: 0 for an empty body; a stream must be chunked instead.
        self.raw_headers = [
            *(h for h in self.raw_headers if h[0] != b"content-length"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),
        ]
        self.chunks = chunks
        self.cut_after = cut_after
        self.error_chunk = error_chunk
        self.watch_disconnect = watch_disconnect

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        gone = asyncio.Event()
        watcher = None
        if self.watch_disconnect:

            async def _watch() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                gone.set()

            watcher = asyncio.ensure_future(_watch())
        sent = 0
        try:
            async for chunk in self.chunks():
                if gone.is_set():
                    return
                if self.cut_after is not None and sent >= self.cut_after:
                    break
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                sent += 1
            else:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            if self.error_chunk is not None:
                await send({"type": "http.response.body", "body": self.error_chunk, "more_body": False})
            else:
                _deliberate_drop.set(True)  # return with the body unfinished: uvicorn closes the socket
        finally:
            if watcher is not None:
                watcher.cancel()


async def sleep_ms(ms: float) -> None:
    if ms > 0:
        await asyncio.sleep(ms / 1000.0)


async def paced_pieces(
    pieces: list[str], ttft_ms: float, token_delay_ms: float
) -> AsyncIterator[tuple[int, str, str]]:
    """``(index, piece, text so far)`` for each piece of a streamed answer, at the configured pace
    (time to first token, then a delay between tokens)."""
    await sleep_ms(ttft_ms)
    text = ""
    for i, piece in enumerate(pieces):
        if i:
            await sleep_ms(token_delay_ms)
        text += piece
        yield i, piece, text


async def apply_fault_latency(fault: Fault | None, extra_ms: float = 0.0) -> None:
    await sleep_ms((fault.latency_ms if fault else 0.0) + extra_ms)
