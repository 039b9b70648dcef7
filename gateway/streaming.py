"""Server-sent events in OpenAI's chat-completion chunk format.

Every chunk of one completion shares id/created/model, so those bytes are serialised once
per stream. A stream that fails after its first byte ends with an explicit ``error`` event
and no ``[DONE]``: a client must never mistake a cut answer for a complete one.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson

from gateway.errors import APIError, from_provider_error
from policies.routing import StreamInterrupted
from providers.base import ChatChunk, ProviderError, Usage

log = logging.getLogger("talkgate.streaming")

DONE = b"data: [DONE]\n\n"
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


def sse_event(payload: Any) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def usage_dict(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


class ChunkWriter:
    """Builds the ``data: {...}`` lines of one streamed chat completion."""

    __slots__ = ("_head", "_tail")

    def __init__(self, completion_id: str, created: int, model: str, include_usage: bool) -> None:
        head = orjson.dumps(
            {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model}
        )
        # '{"id":..,"model":".."' + ',"choices":' ... ; usage:null on every chunk when usage is requested
        self._head = b"data: " + head[:-1] + b',"system_fingerprint":null,"choices":'
        self._tail = b',"usage":null}\n\n' if include_usage else b"}\n\n"

    def _choice(self, delta: dict[str, Any], finish_reason: str | None) -> bytes:
        choice = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]
        return self._head + orjson.dumps(choice) + self._tail

    def role(self) -> bytes:
        return self._choice({"role": "assistant", "content": ""}, None)

    def content(self, text: str) -> bytes:
        return self._choice({"content": text}, None)

    def finish(self, reason: str) -> bytes:
        return self._choice({}, reason)

    def usage(self, usage: Usage) -> bytes:
        return self._head + b'[],"usage":' + orjson.dumps(usage_dict(usage)) + b"}\n\n"


def error_event(err: APIError) -> bytes:
    return sse_event(err.body())


async def chat_sse(
    chunks: AsyncIterator[ChatChunk], writer: ChunkWriter, include_usage: bool, on_done: Any = None
) -> AsyncIterator[bytes]:
    """Turn provider chunks into SSE bytes; ``on_done(text, finish_reason, usage)`` runs after a clean end.

    Provider chunks may carry text and ``finish_reason`` together; the finish chunk is always a
    separate event, as OpenAI sends it.

    Events that are ready together go out as one piece (one ASGI send through the middleware
    chain, one socket write) without holding anything back: the role event waits only for the
    first chunk, which the router already has in hand, and the text of the chunk that carries
    ``finish_reason`` is joined to the closing events that follow it at once.
    """
    pending = writer.role()
    finish_reason = "stop"
    usage: Usage | None = None
    parts: list[str] = []
    try:
        async for chunk in chunks:
            if chunk.delta:
                parts.append(chunk.delta)
                pending += writer.content(chunk.delta)
            if chunk.usage is not None:
                usage = chunk.usage
            if chunk.finish_reason:
                finish_reason = chunk.finish_reason  # the last chunk: its text goes with the end
            elif pending:
                yield pending
                pending = b""
    except StreamInterrupted as exc:
        err = from_provider_error(exc.cause)
        err.message = f"The upstream stream was interrupted: {err.message}"
        log.warning("chat stream interrupted after first byte: %r", exc.cause)
        yield pending + error_event(err)
        return
    except ProviderError as exc:  # a provider error the router did not wrap
        log.warning("chat stream failed after first byte: %r", exc)
        yield pending + error_event(from_provider_error(exc))
        return
    except Exception:
        log.exception("chat stream crashed after first byte")
        yield pending + error_event(
            APIError(500, "The stream failed inside the gateway.", type="server_error")
        )
        return
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()
    end = pending + writer.finish(finish_reason)
    if include_usage:
        end += writer.usage(usage or Usage())
    yield end + DONE
    if on_done is not None:
        on_done("".join(parts), finish_reason, usage)
