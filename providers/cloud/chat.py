"""Qwen chat over DashScope's native text-generation endpoint (plain and SSE).

Native rather than OpenAI-compatible mode because its errors are documented (reference
§6), the SSE stream carries cumulative usage on every event, and the SDK uses it too.

Tools, tool choice and response formats map onto the native ``parameters`` one to one;
tool calls come back in ``message.tool_calls`` (streamed: the first fragment of a call has its
id and name, later ones ``"id": ""`` and argument fragments only, and the finish reason may say
``stop`` although calls are present), normalised here to ``ToolCall``/``ToolCallDelta``.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import AsyncIterator
from typing import Any

from providers.base import (
    ChatChunk,
    ChatRequest,
    ChatResult,
    ErrorKind,
    ProviderError,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from providers.cloud.client import DashScopeClient
from providers.cloud.lifecycle import CloudLifecycle

GENERATION_PATH = "services/aigc/text-generation/generation"
#: Qwen-VL models, and any request with images, go to the multimodal endpoint (content as parts).
MULTIMODAL_PATH = "services/aigc/multimodal-generation/generation"

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
    if request.tools:
        params["tools"] = request.tools
        if request.tool_choice is not None:
            params["tool_choice"] = request.tool_choice
        if request.parallel_tool_calls is not None:
            params["parallel_tool_calls"] = request.parallel_tool_calls
    messages = list(request.messages)
    fmt = request.response_format
    if fmt is not None and fmt["type"] == "json_schema" and request.model not in NATIVE_JSON_SCHEMA_MODELS:
        # JSON Schema mode exists on a few Bailian models only: elsewhere JSON mode plus the schema
        # in a system message; the gateway checks the answer (gateway/structured/answers.py).
        messages.insert(0, {"role": "system", "content": schema_instruction(fmt["json_schema"]["schema"])})
        fmt = {"type": "json_object"}
    if fmt is not None:
        params["response_format"] = fmt
    multimodal = is_multimodal(request)
    messages = [_native_message(m, multimodal) for m in messages]
    return {"model": request.model, "input": {"messages": messages}, "parameters": params}


#: Models that enforce ``json_schema`` themselves (reference: tools-structured-vision.md §2).
NATIVE_JSON_SCHEMA_MODELS = frozenset(
    {"qwen-plus-latest", "qwen-plus-2025-12-01", "qwen-plus-2025-09-11", "qwen-plus-2025-07-28"}
)


def schema_instruction(schema: dict[str, Any]) -> str:
    return (
        "Answer with one JSON object only, no other text. It must be valid against this JSON "
        f"Schema: {json.dumps(schema, ensure_ascii=False)}"
    )


def is_multimodal(request: ChatRequest) -> bool:
    return "-vl" in request.model.lower() or any(isinstance(m.get("content"), list) for m in request.messages)


def path_for(request: ChatRequest) -> str:
    return MULTIMODAL_PATH if is_multimodal(request) else GENERATION_PATH


def _native_parts(content: Any) -> list[dict[str, str]]:
    """OpenAI content (a string, or text and image_url parts) → the multimodal endpoint's parts."""
    if not isinstance(content, list):
        return [{"text": content or ""}]
    parts = []
    for part in content:
        if part.get("type") == "image_url":
            parts.append({"image": part["image_url"]["url"]})
        else:
            parts.append({"text": part.get("text", "")})
    return parts


def _native_message(message: dict[str, Any], multimodal: bool) -> dict[str, Any]:
    """An assistant message repeating earlier calls carries ``content: ""`` and indexed calls;
    on the multimodal endpoint every content is a list of ``{"text"}``/``{"image"}`` parts."""
    calls = message.get("tool_calls")
    if multimodal:
        message = {
            **message,
            "content": [] if calls and not message.get("content") else _native_parts(message.get("content")),
        }
    if not calls:
        return message
    indexed = [{**call, "index": i} for i, call in enumerate(calls)]
    content = message.get("content") or ([] if multimodal else "")
    return {**message, "content": content, "tool_calls": indexed}


def parse_tool_calls(message: dict[str, Any]) -> list[ToolCall]:
    """A whole reply's calls (non-streamed)."""
    calls = []
    for i, raw in enumerate(message.get("tool_calls") or ()):
        if not isinstance(raw, dict):
            continue
        function = raw.get("function") or {}
        calls.append(
            ToolCall(
                id=raw.get("id") or _call_id(),
                name=str(function.get("name") or ""),
                arguments=str(function.get("arguments") or ""),
                index=int(raw.get("index", i)),
            )
        )
    return calls


class ToolCallAssembler:
    """Streamed call fragments → ``ToolCallDelta``s in the order the OpenAI SDK assembles them:
    the first piece of each index has an id and a name (made up if the upstream gave none)."""

    def __init__(self) -> None:
        self.started: set[int] = set()
        self.current = 0

    def pieces(self, message: dict[str, Any]) -> list[ToolCallDelta]:
        out = []
        for raw in message.get("tool_calls") or ():
            if not isinstance(raw, dict):
                continue
            index = int(raw["index"]) if isinstance(raw.get("index"), int) else self.current
            self.current = index
            function = raw.get("function") or {}
            arguments = str(function.get("arguments") or "")
            if index not in self.started:
                self.started.add(index)
                out.append(
                    ToolCallDelta(
                        index, raw.get("id") or _call_id(), str(function.get("name") or ""), arguments
                    )
                )
            elif arguments:
                out.append(ToolCallDelta(index, arguments=arguments))
        return out


def _call_id() -> str:
    return "call_" + os.urandom(12).hex()


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


def _message(reply: dict[str, Any]) -> dict[str, Any]:
    choices = (reply.get("output") or {}).get("choices") or [{}]
    return choices[0].get("message") or {}


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
        reply = await self.client.post_json(
            path_for(request), build_body(request, self.ceiling, stream=False)
        )
        text, reason = _first_choice(reply)
        calls = parse_tool_calls(_message(reply))
        return ChatResult(
            text=text,
            finish_reason="tool_calls" if calls else reason or "stop",  # Bailian may say "stop"
            usage=parse_usage(reply.get("usage")) or Usage(),
            model=request.model,
            tool_calls=calls,
        )

    async def chat_stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        """Yields text increments; the last chunk has ``finish_reason`` and usage.

        A stream that ends without a finish reason was cut off: that raises RETRYABLE
        rather than passing a truncated answer off as complete.
        """
        body = build_body(request, self.ceiling, stream=True)
        usage: Usage | None = None
        calls = ToolCallAssembler()
        async with contextlib.aclosing(self.client.stream_sse(path_for(request), body)) as events:
            async for data in events:
                if not (data.get("output") or {}).get("choices") and "text" not in (data.get("output") or {}):
                    usage = parse_usage(data.get("usage")) or usage  # a usage-only event
                    continue
                text, reason = _first_choice(data)
                pieces = calls.pieces(_message(data))
                usage = parse_usage(data.get("usage")) or usage
                if reason is not None:
                    if calls.started:
                        reason = "tool_calls"
                    yield ChatChunk(delta=text, finish_reason=reason, usage=usage, tool_calls=pieces)
                    return
                if text or pieces:  # with the cumulative usage so far: a cut stream is billed by it
                    yield ChatChunk(delta=text, usage=usage, tool_calls=pieces)
        raise ProviderError(ErrorKind.RETRYABLE, "DashScope stream ended without a finish reason")
