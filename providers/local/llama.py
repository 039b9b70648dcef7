"""Local chat on llama.cpp (llama-cpp-python): any GGUF chat model, SmolLM2-135M by default.

This is the gateway side: it checks the request and talks to the model's worker process,
where ``providers/local/llama_engine.py`` runs llama.cpp (a native crash there fails only the
calls that worker was running). The chat template comes from the GGUF metadata
(llama-cpp-python applies ``tokenizer.chat_template`` itself).

Tools, JSON mode and JSON Schema answers are constrained by a grammar
(``providers/local/llama_structured.py``). The chat templates of small GGUF models know no
tool roles, so earlier calls and tool results reach the template as text: an assistant's calls
as a sentence ("I called get_weather with {...}."), a tool result as a user turn naming the
tool. Why a sentence and not the JSON the model is asked to write: SmolLM2 copies a JSON call
from the history, as its answer even with ``tool_choice: "none"``; after a sentence it answered
from the tool result (both seen at temperature 0).

Images are refused: these are text-only models.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from providers.base import ChatChunk, ChatRequest, ChatResult, ErrorKind, ProviderError
from providers.local.lifecycle import LocalModels
from providers.local.llama_structured import plan
from providers.local.models import gguf_path

_ROLES = {"system", "user", "assistant"}


class LlamaCppChatProvider(LocalModels):
    name = "local"
    section = "llm"
    kind = "chat"
    engine_module = "llama_cpp"
    engine_package = "llama-cpp-python"
    engine_class = "providers.local.llama_engine:LlamaEngine"
    #: What every local chat model takes: tools and JSON Schema answers through a grammar
    #: (``tool_choice`` auto/none/required/named, ``parallel_tool_calls``, ``json_object``), no images.
    CAPABILITIES = {"tools": True, "json_object": True, "json_schema": True, "vision": False}

    def capabilities(self, model: str) -> dict[str, bool]:
        """The request features ``model`` supports: the same for every GGUF chat model, since
        the grammar, not the model's training, makes the answer's shape."""
        return dict(self.CAPABILITIES)

    def _locate(self, name: str, config: Any) -> Path:
        return gguf_path(name, config.path)

    async def chat(self, request: ChatRequest) -> ChatResult:
        messages = _plain_messages(request.messages)
        return await self.call(request.model, "complete", messages, self._job(request))

    async def chat_stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        """Deltas as generated; with tools offered (and not switched off by ``tool_choice:
        "none"``), the answer is buffered in the worker until complete, then replayed as text
        pieces or tool-call pieces: only the whole JSON says which of the two it is."""
        messages = _plain_messages(request.messages)
        async for chunk in self.stream(request.model, "stream", messages, self._job(request)):
            yield chunk

    def _job(self, request: ChatRequest) -> dict[str, Any]:
        ceiling = self.settings.max_tokens_ceiling
        return {
            "max_tokens": min(request.max_tokens or ceiling, ceiling),
            "stop": list(request.stop),
            "sampling": request.sampling(),
            "structured": plan(request),
        }


def _plain_messages(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    """OpenAI messages → role/content text pairs the chat template understands."""
    out: list[dict[str, str]] = []
    called: dict[str, str] = {}  # tool call id -> function name, to label the results
    for message in messages:
        role = message.get("role")
        content = _text(message.get("content"))
        if role == "assistant" and message.get("tool_calls"):
            calls = message["tool_calls"]
            called.update({c["id"]: c["function"]["name"] for c in calls if _is_call(c)})
            content = "\n".join(part for part in (content, _describe_calls(calls)) if part)
        if role == "tool":  # a tool result is context the small model can still read
            name = called.get(message.get("tool_call_id") or "")
            role, content = "user", f"Tool result{f' ({name})' if name else ''}: {content or ''}"
        if role not in _ROLES:
            raise ProviderError(
                ErrorKind.BAD_REQUEST, f"unsupported message role {role!r}", code="InvalidMessage"
            )
        out.append({"role": role, "content": content or ""})
    if not out:
        raise ProviderError(ErrorKind.BAD_REQUEST, "messages must not be empty", code="InvalidMessage")
    return out


def _is_call(call: Any) -> bool:
    return (
        isinstance(call, dict) and isinstance(call.get("id"), str) and isinstance(call.get("function"), dict)
    )


def _describe_calls(calls: list[dict[str, Any]]) -> str:
    """An earlier assistant turn's calls, in words."""
    said = []
    for call in calls:
        function = call.get("function") if _is_call(call) else None
        if function is None:
            raise ProviderError(
                ErrorKind.BAD_REQUEST,
                "an assistant tool call needs an id and a function",
                code="InvalidMessage",
            )
        said.append(f"I called {function.get('name', '')} with {function.get('arguments') or '{}'}.")
    return " ".join(said)


def _text(content: Any) -> str | None:
    """A message's text; any non-text part (an image) is refused: these models read text only."""
    if not isinstance(content, list):
        return None if content is None else str(content)
    parts = []
    for part in content:
        if not isinstance(part, dict) or part.get("type") != "text":
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            raise ProviderError(
                ErrorKind.BAD_REQUEST,
                f"local chat models accept text content only, not {kind!r} parts",
                code="UnsupportedContent",
            )
        parts.append(str(part.get("text", "")))
    return "".join(parts)
