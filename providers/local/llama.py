"""Local chat on llama.cpp (llama-cpp-python): any GGUF chat model, SmolLM2-135M by default.

The chat template comes from the GGUF metadata (llama-cpp-python applies
``tokenizer.chat_template`` itself). A llama.cpp context is not thread-safe, so a model
configured with ``concurrency: N`` gets N contexts, each used by one call at a time.
"""

from __future__ import annotations

import logging
import os
import queue
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from providers.base import ChatChunk, ChatRequest, ChatResult, ErrorKind, ProviderError, Usage
from providers.local.lifecycle import LocalModels
from providers.local.llama_cpu import amx_present, model_params_override, use_extra_buffers
from providers.local.models import gguf_path

log = logging.getLogger("talkgate.local")
_ROLES = {"system", "user", "assistant"}


@dataclass
class LlamaModel:
    """N llama.cpp contexts of one GGUF, plus what is needed to count prompt tokens."""

    name: str
    path: Path
    n_ctx: int
    contexts: queue.Queue[Any]
    formatter: Any | None  # Jinja2ChatFormatter of the GGUF's template, when it has one

    def checkout(self) -> Any:
        return self.contexts.get()

    def checkin(self, llm: Any) -> None:
        self.contexts.put(llm)


def default_threads() -> int:
    """llama.cpp threads when ``n_threads`` is unset: the usable cores but one, at least 1.

    Why not every core: llama.cpp's threads meet at a spinning barrier several hundred times a
    token, so one descheduled thread stalls the others. In the gateway one core is wanted by
    the event loop (and ASR/TTS runtimes), and on the 2-core CI VM one thread was as fast as two
    when idle and several times faster under load (bench/RESULTS.md, resilience).
    """
    try:
        cores = len(os.sched_getaffinity(0))  # honours CPU pinning / container cpusets
    except AttributeError:  # pragma: no cover - not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores - 1)


class LlamaCppChatProvider(LocalModels[LlamaModel]):
    name = "local"
    section = "llm"
    kind = "chat"
    engine_module = "llama_cpp"
    engine_package = "llama-cpp-python"

    def _locate(self, name: str, config: Any) -> Path:
        return gguf_path(name, config.path)

    def _open(self, name: str, config: Any, files: Path) -> LlamaModel:
        import llama_cpp.llama_cpp as llama_lib
        from llama_cpp import Llama, llama_chat_format

        threads = config.n_threads or default_threads()
        amx = amx_present(llama_lib)
        extra = use_extra_buffers(config.extra_buffers, amx=amx)
        if amx and extra:
            log.warning(
                "local chat model %s: llama.cpp extra buffer types forced on with AMX present "
                "(llama.cpp issue 20824: may segfault)",
                name,
            )
        # False is not llama.cpp's default: only then does the struct need changing.
        overrides = {} if extra else {"use_extra_bufts": False}
        contexts: queue.Queue[Any] = queue.Queue()
        first: Any = None
        for _ in range(max(1, config.concurrency)):
            try:
                with model_params_override(llama_lib, **overrides):
                    llm = Llama(
                        model_path=str(files),
                        n_ctx=config.n_ctx,
                        n_threads=threads,
                        n_threads_batch=threads,  # llama-cpp-python's default is every core
                        verbose=False,
                    )
            except Exception as exc:  # a corrupt or non-GGUF file
                raise ProviderError(
                    ErrorKind.UNAVAILABLE,
                    f"local chat model '{name}': llama.cpp cannot load {files}: {exc}",
                    code="ModelUnavailable",
                ) from exc
            first = first or llm
            contexts.put(llm)
        template = first.metadata.get("tokenizer.chat_template")
        formatter = None
        if template:
            vocab = first._model
            formatter = llama_chat_format.Jinja2ChatFormatter(
                template=template,
                eos_token=vocab.token_get_text(first.token_eos()),
                bos_token=vocab.token_get_text(first.token_bos()),
            )
        return LlamaModel(name, files, first.n_ctx(), contexts, formatter)

    # ------------------------------------------------------------------ calls

    async def chat(self, request: ChatRequest) -> ChatResult:
        model = await self.model(request.model)
        messages = _plain_messages(request.messages)
        return await self.pool.run(self._complete, model, messages, request, limits=(self.limit(model.name),))

    async def chat_stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        model = await self.model(request.model)
        messages = _plain_messages(request.messages)
        chunks = self.pool.iterate(
            lambda: self._stream(model, messages, request), limits=(self.limit(model.name),)
        )
        async with aclosing(chunks):  # stop the worker as soon as the consumer goes away
            async for chunk in chunks:
                yield chunk

    # ------------------------------------------------------------------ on a worker thread

    def _params(self, model: LlamaModel, llm: Any, messages: list[dict[str, str]], request: ChatRequest):
        prompt_tokens = _count_prompt_tokens(model, llm, messages)
        room = model.n_ctx - prompt_tokens
        if room < 1:
            raise ProviderError(
                ErrorKind.BAD_REQUEST,
                f"the conversation ({prompt_tokens} tokens) does not fit the local model "
                f"'{model.name}' context of {model.n_ctx} tokens",
                code="ContextLengthExceeded",
            )
        max_tokens = min(
            request.max_tokens or self.settings.max_tokens_ceiling, self.settings.max_tokens_ceiling
        )
        params: dict[str, Any] = {
            "messages": messages,
            "max_tokens": max(1, min(max_tokens, room)),
            "stop": list(request.stop) or None,
        }
        # Unset sampling values keep llama-cpp-python's chat defaults (0.2 / 0.95), which suit
        # small models far better than OpenAI's temperature 1.0.
        params.update(request.sampling())
        return params, prompt_tokens

    def _complete(
        self, model: LlamaModel, messages: list[dict[str, str]], request: ChatRequest
    ) -> ChatResult:
        llm = model.checkout()
        try:
            params, _ = self._params(model, llm, messages, request)
            out = llm.create_chat_completion(**params)
        finally:
            model.checkin(llm)
        choice = out["choices"][0]
        usage = out.get("usage") or {}
        return ChatResult(
            text=choice["message"].get("content") or "",
            finish_reason=_finish(choice.get("finish_reason")),
            usage=Usage(usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)),
            model=model.name,
        )

    def _stream(
        self, model: LlamaModel, messages: list[dict[str, str]], request: ChatRequest
    ) -> Iterator[ChatChunk]:
        llm = model.checkout()
        try:
            params, prompt_tokens = self._params(model, llm, messages, request)
            text: list[str] = []
            finish = "stop"
            for part in llm.create_chat_completion(stream=True, **params):
                choice = part["choices"][0]
                delta = choice.get("delta", {}).get("content")
                if delta:
                    text.append(delta)
                    yield ChatChunk(delta=delta)
                if choice.get("finish_reason"):
                    finish = _finish(choice["finish_reason"])
            # llama-cpp-python reports no usage when streaming: count the streamed text.
            completion = len(llm.tokenize("".join(text).encode("utf-8"), add_bos=False)) if text else 0
        finally:
            model.checkin(llm)
        yield ChatChunk(finish_reason=finish, usage=Usage(prompt_tokens, completion))


def _finish(reason: str | None) -> str:
    return "length" if reason == "length" else "stop"


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


def _count_prompt_tokens(model: LlamaModel, llm: Any, messages: list[dict[str, str]]) -> int:
    """Prompt tokens as llama.cpp will see them (template applied), to fit max_tokens to n_ctx."""
    if model.formatter is not None:
        prompt = model.formatter(messages=messages).prompt
    else:  # no template in the GGUF: an estimate with a small per-message overhead
        prompt = "\n".join(f"{m['role']}: {m['content']}" for m in messages) + "\nassistant:"
    return len(llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=True))
