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
from gateway.sse_response import LastChunk
from policies.routing import StreamInterrupted
from providers.base import ChatChunk, ProviderError, ToolCallDelta, Usage

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

    def tool_calls(self, pieces: list[ToolCallDelta]) -> bytes:
        """Tool-call deltas as the OpenAI SDK merges them: per ``index``, the first piece
        carries ``id``, ``type`` and ``function.name``; later ones only argument fragments."""
        out = []
        for piece in pieces:
            entry: dict[str, Any] = {"index": piece.index}
            function: dict[str, Any] = {"arguments": piece.arguments}
            if piece.id:
                entry["id"] = piece.id
                entry["type"] = "function"
            if piece.name:
                function["name"] = piece.name
            entry["function"] = function
            out.append(entry)
        return self._choice({"tool_calls": out}, None)

    def finish(self, reason: str) -> bytes:
        return self._choice({}, reason)

    def usage(self, usage: Usage) -> bytes:
        return self._head + b'[],"usage":' + orjson.dumps(usage_dict(usage)) + b"}\n\n"


def error_event(err: APIError) -> bytes:
    return sse_event(err.body())


#: Status booked for a stream the client walked away from (nginx's "client closed request").
CLIENT_CLOSED = 499


class StreamMeter:
    """What one streamed chat has produced so far, so that its usage row and the tokens-per-minute
    reconciliation get real numbers however the stream ends (cleanly, cut upstream, or the client
    disconnecting). Without it a client could read an answer, drop the connection before the
    end, and be charged nothing.

    ``chat_sse`` updates it per chunk (an append and an attribute store); ``settle`` is called
    once, by the auth dependency after the response (``gateway.auth._finish``), before the TPM
    reconciliation, because a disconnected client's generator may never resume to book anything.
    """

    __slots__ = ("_messages", "error_status", "finish_reason", "finished", "parts", "usage")

    def __init__(self, messages: list[dict[str, Any]]) -> None:
        self.parts: list[str] = []  # text handed to the client, in order
        self.usage: Usage | None = None  # the provider's latest (cumulative) usage, if any
        self.finished = False  # [DONE] was sent
        self.finish_reason = "stop"  # the provider's, once the stream has ended cleanly
        self.error_status: int | None = None  # set when the upstream broke mid-stream
        self._messages = messages

    def tokens(self) -> tuple[int, int]:
        """(prompt, completion): the provider's counts when it reported them, else estimates
        (characters / 4, as the up-front TPM charge estimates them)."""
        usage = self.usage
        prompt = usage.prompt_tokens if usage is not None else 0
        completion = usage.completion_tokens if usage is not None else 0
        if not prompt:
            chars = sum(len(str(m.get("content") or "")) for m in self._messages)
            prompt = chars // 4 + len(self._messages) * 4
        if not completion and self.parts:
            completion = max(1, (sum(len(p) for p in self.parts) + 3) // 4)
        return prompt, completion

    def settle(self, pending: dict[str, Any]) -> None:
        """Adds this stream's tokens to the usage row ``pending``; an unfinished stream is booked
        with the upstream error's status, or 499 when the client went away."""
        prompt, completion = self.tokens()
        pending["tokens_in"] = pending.get("tokens_in", 0) + prompt
        pending["tokens_out"] = pending.get("tokens_out", 0) + completion
        if not self.finished:
            pending["status"] = self.error_status or CLIENT_CLOSED


async def chat_sse(
    chunks: AsyncIterator[ChatChunk],
    writer: ChunkWriter,
    include_usage: bool,
    on_done: Any = None,
    meter: StreamMeter | None = None,
) -> AsyncIterator[bytes]:
    """Turn provider chunks into SSE bytes; ``on_done(text, finish_reason, usage)`` runs after a clean end.

    ``meter`` (see StreamMeter) follows the text and usage as they go out, for billing.

    Provider chunks may carry text and ``finish_reason`` together; the finish chunk is always a
    separate event, as OpenAI sends it.

    Events that are ready together go out as one piece (one ASGI send through the middleware
    chain, one socket write) without holding anything back: the role event waits only for the
    first chunk, which the router already has in hand, and the text of the chunk that carries
    ``finish_reason`` is joined to the closing events that follow it at once.
    """
    if meter is None:
        meter = StreamMeter([])
    pending = writer.role()
    finish_reason = "stop"
    parts = meter.parts
    try:
        async for chunk in chunks:
            if chunk.delta:
                parts.append(chunk.delta)
                pending += writer.content(chunk.delta)
            if chunk.tool_calls:
                pending += writer.tool_calls(chunk.tool_calls)
            if chunk.usage is not None:
                meter.usage = chunk.usage
            if chunk.finish_reason:
                finish_reason = chunk.finish_reason  # the last chunk: its text goes with the end
            elif pending:
                yield pending
                pending = b""
    except StreamInterrupted as exc:
        err = from_provider_error(exc.cause)
        err.message = f"The upstream stream was interrupted: {err.message}"
        log.warning("chat stream interrupted after first byte: %r", exc.cause)
        meter.error_status = err.status
        yield pending + error_event(err)
        return
    except ProviderError as exc:  # a provider error the router did not wrap
        log.warning("chat stream failed after first byte: %r", exc)
        err = from_provider_error(exc)
        meter.error_status = err.status
        yield pending + error_event(err)
        return
    except Exception:
        log.exception("chat stream crashed after first byte")
        meter.error_status = 500
        yield pending + error_event(
            APIError(500, "The stream failed inside the gateway.", type="server_error")
        )
        return
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()
    usage = meter.usage
    end = pending + writer.finish(finish_reason)
    if include_usage:
        end += writer.usage(usage or Usage())
    yield LastChunk(end + DONE)
    meter.finish_reason, meter.finished = finish_reason, True  # resumed: the last bytes went out
    if on_done is not None:
        on_done("".join(parts), finish_reason, usage)
