"""Local chat on llama.cpp (llama-cpp-python): any GGUF chat model, SmolLM2-135M by default.

This is the gateway side: it checks the request and talks to the model's worker process,
where ``providers/local/llama_engine.py`` runs llama.cpp (a native crash there fails only the
calls that worker was running). The chat template comes from the GGUF metadata
(llama-cpp-python applies ``tokenizer.chat_template`` itself).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from providers.base import ChatChunk, ChatRequest, ChatResult, ErrorKind, ProviderError
from providers.local.lifecycle import LocalModels
from providers.local.models import gguf_path

_ROLES = {"system", "user", "assistant"}


class LlamaCppChatProvider(LocalModels):
    name = "local"
    section = "llm"
    kind = "chat"
    engine_module = "llama_cpp"
    engine_package = "llama-cpp-python"
    engine_class = "providers.local.llama_engine:LlamaEngine"

    def _locate(self, name: str, config: Any) -> Path:
        return gguf_path(name, config.path)

    async def chat(self, request: ChatRequest) -> ChatResult:
        messages = _plain_messages(request.messages)
        return await self.call(request.model, "complete", messages, self._job(request))

    async def chat_stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        messages = _plain_messages(request.messages)
        async for chunk in self.stream(request.model, "stream", messages, self._job(request)):
            yield chunk

    def _job(self, request: ChatRequest) -> dict[str, Any]:
        ceiling = self.settings.max_tokens_ceiling
        return {
            "max_tokens": min(request.max_tokens or ceiling, ceiling),
            "stop": list(request.stop),
            "sampling": request.sampling(),
        }


def _plain_messages(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    """OpenAI messages → role/content text pairs the chat template understands."""
    out: list[dict[str, str]] = []
    for message in messages:
        role = message.get("role")
        content = message.get("content")
        if isinstance(content, list):
            parts = []
            for part in content:
                if not isinstance(part, dict) or part.get("type") != "text":
                    raise ProviderError(
                        ErrorKind.BAD_REQUEST,
                        "local chat models accept text content only",
                        code="UnsupportedContent",
                    )
                parts.append(str(part.get("text", "")))
            content = "".join(parts)
        if role == "tool":  # a tool result is context the small model can still read
            role, content = "user", f"Tool result: {content or ''}"
        if role not in _ROLES:
            raise ProviderError(
                ErrorKind.BAD_REQUEST, f"unsupported message role {role!r}", code="InvalidMessage"
            )
        out.append({"role": role, "content": "" if content is None else str(content)})
    if not out:
        raise ProviderError(ErrorKind.BAD_REQUEST, "messages must not be empty", code="InvalidMessage")
    return out
