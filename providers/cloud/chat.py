"""Qwen chat over DashScope's native text-generation endpoint (plain and SSE).

Native rather than OpenAI-compatible mode because its errors are documented (reference
§6), the SSE stream carries cumulative usage on every event, and the SDK uses it too.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from providers.base import ChatChunk, ChatRequest, ChatResult, ErrorKind, ProviderError, Usage
from providers.cloud.client import DashScopeClient
from providers.cloud.lifecycle import CloudLifecycle

GENERATION_PATH = "services/aigc/text-generation/generation"

#: Chat models listed by ``models()``; any Qwen text model name is accepted by ``chat``.
CHAT_MODELS: tuple[str, ...] = ("qwen-plus", "qwen-turbo", "qwen-max", "qwen-flash", "qwen-long")

#: ChatRequest.extra keys passed through to ``parameters`` (DashScope names).
PASSTHROUGH_PARAMETERS = frozenset(
    {
        "top_k",
        "repetition_penalty",
        "presence_penalty",
        "enable_search",
        "search_options",
        "enable_thinking",
        "thinking_budget",
        "response_format",
    }
)


def build_body(request: ChatRequest, ceiling: int, *, stream: bool) -> dict[str, Any]:
    """The native request body. ``max_tokens`` is always sent, clamped to ``ceiling``."""
    wanted = request.max_tokens if request.max_tokens is not None else ceiling
    params: dict[str, Any] = {
        "result_format": "message",
        "max_tokens": max(1, min(wanted, ceiling)),
    }
    if stream:
        params["incremental_output"] = True
    params.update(request.sampling())
    if request.stop:
        params["stop"] = list(request.stop)
    for key, value in request.extra.items():
        if key in PASSTHROUGH_PARAMETERS and value is not None:
            params[key] = value
    return {"model": request.model, "input": {"messages": request.messages}, "parameters": params}


def parse_usage(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    return Usage(
        prompt_tokens=int(raw.get("input_tokens") or 0), completion_tokens=int(raw.get("output_tokens") or 0)
    )


def finish_reason(value: Any) -> str | None:
    """DashScope sends the string "null" (or null) while generating."""
    if value is None or value == "null" or value == "":
        return None
    return str(value)


def _first_choice(reply: dict[str, Any]) -> tuple[str, str | None]:
    """Text and finish reason of a reply in either result format."""
    output = reply.get("output")
    if not isinstance(output, dict):
        raise ProviderError(ErrorKind.RETRYABLE, "DashScope reply has no output")
    if "text" in output and "choices" not in output:
        return output.get("text") or "", finish_reason(output.get("finish_reason"))
    choices = output.get("choices") or []
    if not choices:
        raise ProviderError(ErrorKind.RETRYABLE, "DashScope reply has no choices")
    choice = choices[0]
    message = choice.get("message") or {}
    content = message.get("content") or ""
    if isinstance(content, list):  # multimodal-style content parts
        content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content, finish_reason(choice.get("finish_reason"))


class BailianChatProvider(CloudLifecycle):
    """``ChatProvider`` for Qwen models on Bailian. No retries here: the router owns them."""

    def __init__(self, settings: Any, client: DashScopeClient | None = None) -> None:
        super().__init__(settings, client)
        self.ceiling = int(settings.max_tokens_ceiling)

    def models(self) -> list[str]:
        return list(CHAT_MODELS)

    async def chat(self, request: ChatRequest) -> ChatResult:
        reply = await self.client.post_json(GENERATION_PATH, build_body(request, self.ceiling, stream=False))
        text, reason = _first_choice(reply)
        return ChatResult(
            text=text,
            finish_reason=reason or "stop",
            usage=parse_usage(reply.get("usage")) or Usage(),
            model=request.model,
        )

    async def chat_stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        """Yields text increments; the last chunk has ``finish_reason`` and usage.

        A stream that ends without a finish reason was cut off: that raises RETRYABLE
        rather than passing a truncated answer off as complete.
        """
        body = build_body(request, self.ceiling, stream=True)
        usage: Usage | None = None
        async with contextlib.aclosing(self.client.stream_sse(GENERATION_PATH, body)) as events:
            async for data in events:
                if not (data.get("output") or {}).get("choices") and "text" not in (data.get("output") or {}):
                    usage = parse_usage(data.get("usage")) or usage  # a usage-only event
                    continue
                text, reason = _first_choice(data)
                usage = parse_usage(data.get("usage")) or usage
                if reason is not None:
                    yield ChatChunk(delta=text, finish_reason=reason, usage=usage)
                    return
                if text:  # with the cumulative usage so far: a cut stream is billed by it
                    yield ChatChunk(delta=text, usage=usage)
        raise ProviderError(ErrorKind.RETRYABLE, "DashScope stream ended without a finish reason")
