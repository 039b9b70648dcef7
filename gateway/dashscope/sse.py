"""DashScope's native SSE framing (reference §2.3), as the official SDK parses it.

Each event is ``id:N`` / ``event:result`` / ``:HTTP_STATUS/200`` / ``data:{json}``, with no
``[DONE]`` at the end. An error inside a stream is ``event:error`` with **no space** after the
colon: the SDK compares that line's raw text, so ``event: error`` would pass for a normal chunk.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.dashscope.errors import error_body

#: Headers of a native stream: no proxy buffering, no caching of a live answer.
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
SSE_MEDIA_TYPE = "text/event-stream"


def sse_event(seq: int, body: dict[str, Any], status: int = 200, event: str = "result") -> bytes:
    """One native SSE event; ``seq`` counts from 1 within the stream."""
    return f"id:{seq}\nevent:{event}\n:HTTP_STATUS/{status}\ndata:".encode() + orjson.dumps(body) + b"\n\n"


def error_event(seq: int, status: int, code: str, message: str, request_id: str) -> bytes:
    """The ``event:error`` that ends a stream which failed after its first event."""
    return sse_event(seq, error_body(code, message, request_id), status=status, event="error")
