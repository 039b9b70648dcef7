"""llama.cpp inside an engine worker: loads one GGUF and answers chat calls (worker side only).

The gateway never imports this module: ``providers/local/llama.py`` names it, and the worker
process (``providers/local/workers/child.py``) loads it. A llama.cpp context is not
thread-safe, so a model configured with ``concurrency: N`` gets N contexts, each used by one
call at a time. Cancellation: generation checks the call's ``cancelled`` event after every
token (a whole answer is generated as a stream as well), so barge-in or a client going away
stops it within one token.

Structured requests (tools, JSON mode, JSON Schema; planned by ``llama_structured.py``) get
format instructions in the system message and a grammar compiled once per schema and cached
here. JSON answers stream as generated; answers that may be tool calls are buffered until
complete and then replayed, because only the parsed JSON says whether they are text or calls.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from providers.base import ChatChunk, ChatResult, ErrorKind, ProviderError, Usage
from providers.local.llama_cpu import amx_present, model_params_override, use_extra_buffers
from providers.local.llama_structured import grammar_text, read_answer, replay, with_instructions
from providers.local.models import unavailable
from providers.local.workers.ipc import LoadSpec

log = logging.getLogger("talkgate.local")
#: Compiled grammars a worker keeps (least recently used dropped first).
GRAMMAR_CACHE_SIZE = 64


def default_threads() -> int:
    """llama.cpp threads when ``n_threads`` is unset: the usable cores but one, at least 1.

    Why not every core: llama.cpp's threads meet at a spinning barrier several hundred times a
    token, so one descheduled thread stalls the others. One core is wanted by the gateway's
    event loop (and ASR/TTS runtimes), and on the 2-core CI VM one thread was as fast as two
    when idle and several times faster under load (bench/RESULTS.md, resilience).
    """
    try:
        cores = len(os.sched_getaffinity(0))  # honours CPU pinning / container cpusets
    except AttributeError:  # pragma: no cover - not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores - 1)


class LlamaEngine:
    """N llama.cpp contexts of one GGUF, plus the chat template to count prompt tokens."""

    methods = frozenset({"complete", "stream"})

    def __init__(self, spec: LoadSpec) -> None:
        import llama_cpp.llama_cpp as llama_lib
        from llama_cpp import Llama, llama_chat_format

        config = spec.config
        self.name = spec.name
        threads = config.n_threads or default_threads()
        amx = amx_present(llama_lib)
        self.extra_buffers = use_extra_buffers(config.extra_buffers, amx=amx)
        if amx and self.extra_buffers:
            log.warning(
                "local chat model %s: llama.cpp extra buffer types forced on with AMX present "
                "(llama.cpp issue 20824: may crash the worker)",
                spec.name,
            )
        # False is not llama.cpp's default: only then does the struct need changing.
        overrides = {} if self.extra_buffers else {"use_extra_bufts": False}
        self.contexts: queue.Queue[Any] = queue.Queue()
        first: Any = None
        for _ in range(max(1, config.concurrency)):
            try:
                with model_params_override(llama_lib, **overrides):
                    llm = Llama(
                        model_path=str(spec.files),
                        n_ctx=config.n_ctx,
                        n_threads=threads,
                        n_threads_batch=threads,  # llama-cpp-python's default is every core
                        verbose=False,
                    )
            except Exception as exc:  # a corrupt or non-GGUF file
                raise unavailable(
                    f"local chat model '{spec.name}': llama.cpp cannot load {spec.files}: {exc}"
                ) from exc
            first = first or llm
            self.contexts.put(llm)
        self.n_ctx = first.n_ctx()
        self._grammars: OrderedDict[str, Any] = OrderedDict()
        self._grammar_lock = threading.Lock()
        self.formatter = None
        template = first.metadata.get("tokenizer.chat_template")
        if template:
            vocab = first._model
            self.formatter = llama_chat_format.Jinja2ChatFormatter(
                template=template,
                eos_token=vocab.token_get_text(first.token_eos()),
                bos_token=vocab.token_get_text(first.token_bos()),
            )

    def info(self) -> dict[str, Any]:
        return {"n_ctx": self.n_ctx, "extra_buffers": self.extra_buffers}

    # ------------------------------------------------------------------ calls

    def complete(
        self, messages: list[dict[str, str]], job: dict[str, Any], *, cancelled: threading.Event
    ) -> ChatResult:
        """The whole answer; generated as a stream so that a cancel stops it between tokens."""
        text: list[str] = []
        last = ChatChunk()
        for chunk in self._generate(messages, job, cancelled):
            if chunk.delta:
                text.append(chunk.delta)
            last = chunk
        usage = last.usage or Usage(0, 0)
        finish = last.finish_reason or "stop"
        structured = job.get("structured")
        if structured is None or cancelled.is_set():  # nobody reads a cancelled answer
            return ChatResult(text="".join(text), finish_reason=finish, usage=usage, model=self.name)
        result = read_answer("".join(text), structured, finish, self.name, usage.completion_tokens)
        result.usage = usage
        return result

    def stream(
        self, messages: list[dict[str, str]], job: dict[str, Any], *, cancelled: threading.Event
    ) -> Iterator[ChatChunk]:
        """Text and JSON answers stream as generated; an answer that may be a tool call is held
        back until it is complete, since only the parsed JSON says which it is (text or calls)."""
        structured = job.get("structured")
        if structured is not None and structured["mode"] == "tools":
            result = self.complete(messages, job, cancelled=cancelled)
            if not cancelled.is_set():
                yield from replay(result)
            return
        text: list[str] = []
        for chunk in self._generate(messages, job, cancelled):
            if chunk.finish_reason is not None and structured is not None and not cancelled.is_set():
                # The deltas are out already; a cut-short JSON answer ends the stream with an error.
                tokens = chunk.usage.completion_tokens if chunk.usage else 0
                read_answer("".join(text), structured, chunk.finish_reason, self.name, tokens)
                chunk.finish_reason = "stop"
            text.append(chunk.delta)
            yield chunk

    def _generate(
        self, messages: list[dict[str, str]], job: dict[str, Any], cancelled: threading.Event
    ) -> Iterator[ChatChunk]:
        """Text deltas as llama.cpp produces them, then one chunk with finish_reason and usage."""
        llm = self.contexts.get()
        try:
            params, prompt_tokens = self._params(llm, messages, job)
            text: list[str] = []
            finish = "stop"
            for part in llm.create_chat_completion(stream=True, **params):
                if cancelled.is_set():  # barge-in or the client went away: stop generating
                    break
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
            self.contexts.put(llm)
        yield ChatChunk(finish_reason=finish, usage=Usage(prompt_tokens, completion))

    def _params(
        self, llm: Any, messages: list[dict[str, str]], job: dict[str, Any]
    ) -> tuple[dict[str, Any], int]:
        structured = job.get("structured")
        if structured is not None:
            messages = with_instructions(messages, structured["instructions"])
        prompt_tokens = self._count_prompt_tokens(llm, messages)
        room = self.n_ctx - prompt_tokens
        if room < 1:
            raise ProviderError(
                ErrorKind.BAD_REQUEST,
                f"the conversation ({prompt_tokens} tokens) does not fit the local model "
                f"'{self.name}' context of {self.n_ctx} tokens",
                code="ContextLengthExceeded",
            )
        params: dict[str, Any] = {
            "messages": messages,
            "max_tokens": max(1, min(job["max_tokens"], room)),
            "stop": job["stop"] or None,
        }
        # Unset sampling values keep llama-cpp-python's chat defaults (0.2 / 0.95), which suit
        # small models far better than OpenAI's temperature 1.0.
        params.update(job["sampling"])
        if structured is not None:
            params["grammar"] = self._grammar(llm, structured["schema"])
        return params, prompt_tokens

    def _grammar(self, llm: Any, schema: dict[str, Any]) -> Any:
        """The compiled grammar for ``schema``, from the cache when this worker has seen it.

        Converting a schema to GBNF is Python work that grows with the schema (tens of tools);
        it is done once per distinct schema text. llama-cpp-python's ``LlamaGrammar`` only holds
        the text and llama.cpp parses it when a call's sampler is built, where an invalid grammar
        would become a NULL sampler and crash the worker: so each new grammar is parsed once
        here first, and refused as a bad request if llama.cpp rejects it.
        """
        import llama_cpp.llama_cpp as llama_lib
        from llama_cpp import LlamaGrammar

        key = json.dumps(schema, ensure_ascii=False, separators=(",", ":"))
        with self._grammar_lock:
            grammar = self._grammars.get(key)
            if grammar is not None:
                self._grammars.move_to_end(key)
                return grammar
        started = time.perf_counter()
        text = grammar_text(schema)
        sampler = llama_lib.llama_sampler_init_grammar(llm._model.vocab, text.encode("utf-8"), b"root")
        if not sampler:
            raise ProviderError(
                ErrorKind.BAD_REQUEST,
                "llama.cpp rejected the grammar built from the requested JSON Schema",
                code="UnsupportedSchema",
            )
        llama_lib.llama_sampler_free(sampler)
        grammar = LlamaGrammar.from_string(text, verbose=False)
        log.debug(
            "local chat model %s: grammar of %d rules compiled in %.1f ms",
            self.name,
            text.count("::="),
            (time.perf_counter() - started) * 1000,
        )
        with self._grammar_lock:
            self._grammars[key] = grammar
            while len(self._grammars) > GRAMMAR_CACHE_SIZE:
                self._grammars.popitem(last=False)
        return grammar

    def _count_prompt_tokens(self, llm: Any, messages: list[dict[str, str]]) -> int:
        """Prompt tokens as llama.cpp will see them (template applied), to fit max_tokens to n_ctx."""
        if self.formatter is not None:
            prompt = self.formatter(messages=messages).prompt
        else:  # no template in the GGUF: an estimate with a small per-message overhead
            prompt = "\n".join(f"{m['role']}: {m['content']}" for m in messages) + "\nassistant:"
        return len(llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=True))


def _finish(reason: str | None) -> str:
    return "length" if reason == "length" else "stop"
