"""DashScope's native SSE framing (reference §2.3), as the official SDK parses it.

Each event is ``id:N`` / ``event:result`` / ``:HTTP_STATUS/200`` / ``data:{json}``, with no
``[DONE]`` at the end. An error inside a stream is ``event:error`` with **no space** after the
colon: the SDK compares that line's raw text, so ``event: error`` would pass for a normal chunk.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.dashscope.bodies import generation_output
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


class GenerationEvents:
    """The text events of one text-generation stream, with the least work per event.

    A stream sends one event per upstream chunk, so the per-event cost is what the front door
    adds to a streamed answer. The bytes around the text (the ``output`` shape of the stream's
    format) and the ``request_id`` tail are serialised once per stream; each event encodes only
    its text and token counts. The bytes are those of ``sse_event(seq, {"output", "usage",
    "request_id"})`` with ``finish_reason`` "null" (tests/gateway/dashscope/test_sse.py).
    """

    __slots__ = ("_after", "_before", "_tail")

    #: Stands for the text while the shape is serialised; split out of the JSON afterwards.
    _MARK = "\x00talkgate-text\x00"

    def __init__(self, request_id: str, fmt: str, parts: bool = False) -> None:
        shape = orjson.dumps(generation_output(self._MARK, "null", fmt, parts=parts))
        before, after = shape.split(orjson.dumps(self._MARK))
        self._before = b'\ndata:{"output":' + before
        self._after = after + b',"usage":'
        self._tail = b',"request_id":' + orjson.dumps(request_id) + b"}\n\n"

    def text(self, seq: int, text: str, input_tokens: int, output_tokens: int) -> bytes:
        usage = b'{"input_tokens":%d,"output_tokens":%d,"total_tokens":%d}' % (
            input_tokens,
            output_tokens,
            input_tokens + output_tokens,
        )
        head = b"id:%d\nevent:result\n:HTTP_STATUS/200" % seq
        return head + self._before + orjson.dumps(text) + self._after + usage + self._tail
