"""Ordered fallback chains per capability, walked with retries and circuit breakers.

The router resolves a client's model name to a chain of ``provider:model`` targets and
walks it. Each target attempt is: ask the target's circuit breaker (open → skip with no
upstream call), then call with retries inside the request's deadline budget
(``policies.retry``). It records what happened on the request context (provider,
fallback, upstream time) so the gateway can put it in the response headers.

What never falls back: a content-safety rejection (CONTENT_FILTERED) and a malformed
request (BAD_REQUEST) go straight back to the client. An upstream credential failure
(AUTH) does fall back, and is logged at ERROR so an operator notices.

Streams fail over only before their first chunk (first-byte timeout included); once a
chunk is handed to the caller, a failure raises ``StreamInterrupted`` instead.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any, TypeVar

from policies import asr_stream
from policies.circuit import BreakerRegistry, BreakerState, Permit, Transition
from policies.failover_report import FailoverLog, breaker_label, exhausted, not_configured, refusal
from policies.retry import Deadline, RetryPolicy, RetrySettings, bounded
from policies.streamguard import (
    StreamInterrupted,
    classify_bugs,
    close_quietly,
    describe_error,
    guarded_stream,
)
from policies.targets import ProviderRegistry, Target, UnknownModelError
from providers.base import (
    FAILOVER_KINDS,
    Capability,
    ChatChunk,
    ChatRequest,
    ChatResult,
    EmbedRequest,
    EmbedResult,
    ErrorKind,
    ProviderError,
    RerankRequest,
    RerankResult,
    SpeechChunk,
    SpeechResult,
    SynthesizeRequest,
    TranscribeRequest,
    Transcript,
    TranscriptPart,
)

__all__ = [
    "ProviderRegistry",
    "Router",
    "StreamInterrupted",
    "Target",
    "UnknownModelError",
]

log = logging.getLogger("talkgate.routing")
T = TypeVar("T")


class _Skipped(Exception):
    """A target was passed over without an upstream call (its breaker refused)."""

    def __init__(self, reason: str, state: str) -> None:
        super().__init__(reason)
        self.reason = reason  # for the client's error message; may quote the last upstream error
        self.state = state  # a short, fixed label for events and metrics


class Router:
    def __init__(
        self, settings: Any, registry: ProviderRegistry, breakers: BreakerRegistry | None = None
    ) -> None:
        self.settings = settings
        self.registry = registry
        #: Observers (metrics, logs) called as listener(event, fields); events:
        #: "attempt" (target, capability, outcome "ok"|"error", seconds, error_kind, error_code, number),
        #: "retry" (target, capability, attempt, error_kind, delay_s),
        #: "fallback" (capability, from_target, to_target, reason),
        #: "skip" (target, capability, reason) — a target passed over without an upstream call,
        #: "breaker" (target, state, previous, reason).
        #: Listeners must be cheap and must not raise.
        self.listeners: list[Callable[[str, dict[str, Any]], None]] = []
        self.retry = RetryPolicy(RetrySettings.from_config(settings.retry))
        self._breakers: BreakerRegistry = breakers or BreakerRegistry.in_memory(settings.breaker)
        self._breakers.on_change = self._breaker_changed
        self.failover_log = FailoverLog()

    @property
    def breakers(self) -> BreakerRegistry:
        return self._breakers

    @breakers.setter
    def breakers(self, registry: BreakerRegistry) -> None:
        """Swap the breaker registry (services installs the Redis-backed one)."""
        registry.on_change = self._breaker_changed
        self._breakers = registry

    def emit(self, event: str, **fields: Any) -> None:
        for listener in self.listeners:
            try:
                listener(event, fields)
            except Exception:  # an observer must never break a request
                log.exception("routing listener failed")

    def _breaker_changed(self, target: str, transition: Transition) -> None:
        self.emit(
            "breaker",
            target=target,
            state=transition.new.value,
            previous=transition.old.value,
            reason=transition.reason,
        )

    # ------------------------------------------------------------------ resolution

    def _route(self, capability: Capability) -> Any:
        return self.settings.routes[capability]

    def models(self, capability: Capability) -> list[str]:
        """Model names a client may ask for (aliases included)."""
        route = self._route(capability)
        names: list[str] = []
        for spec in [*route.chain, *(s for c in route.chains.values() for s in c)]:
            names.append(Target.parse(spec).model)
        # "experiment/..." chains belong to A/B variants (policies/experiments.py): not client-facing.
        chains = [c for c in route.chains if not c.startswith("experiment/")]
        names += route.extra_models + chains + list(route.aliases)
        return list(dict.fromkeys(names))

    def targets(self, capability: Capability) -> list[Target]:
        """Every target the configuration names for a capability (chains first, in order)."""
        route = self._route(capability)
        specs = [*route.chain, *(s for c in route.chains.values() for s in c)]
        specs += [f"bailian:{m}" for m in route.extra_models]
        return list(dict.fromkeys(Target.parse(s) for s in specs))

    def resolve(self, capability: Capability, requested: str | None) -> list[Target]:
        route = self._route(capability)
        default_chain = [Target.parse(s) for s in route.chain]
        if not requested:
            return default_chain
        name = route.aliases.get(requested, requested)
        if name in route.chains:
            return [Target.parse(s) for s in route.chains[name]]
        if ":" in name:
            first = Target.parse(name)
        else:
            known = {t.model: t for t in default_chain}
            for spec in (s for c in route.chains.values() for s in c):
                t = Target.parse(spec)
                known.setdefault(t.model, t)
            if name in known:
                first = known[name]
            elif name in route.extra_models:
                first = Target("bailian", name)
            else:
                raise UnknownModelError(capability, requested, self.models(capability))
        if str(first) not in {str(t) for t in default_chain} and first.model not in self.models(capability):
            raise UnknownModelError(capability, requested, self.models(capability))
        tail = [t for t in default_chain if t != first]
        if first in default_chain:
            tail = default_chain[default_chain.index(first) + 1 :]
        return [first, *tail]

    def _request_for(self, target: Target, request: Any) -> Any:
        request = replace(request, model=target.model)
        if isinstance(request, SynthesizeRequest) and target.provider == "local":
            voices = self.settings.voices.local
            request = replace(request, voice=voices.get(request.voice, voices.get("*", request.voice)))
        return request

    def _budget(self, capability: Capability) -> float:
        return float(getattr(self.settings.deadlines, capability))

    # ------------------------------------------------------------------ walking the chain

    async def _run(
        self,
        capability: Capability,
        request: Any,
        ctx: Any,
        call: Callable[[Any, Any], Awaitable[T]],
        *,
        stream: bool = False,
        skip: Callable[[Target], str | None] | None = None,
    ) -> T:
        chain = self.resolve(capability, request.model)
        deadline = Deadline(self._budget(capability))
        failures: list[tuple[Target, str, ProviderError | None]] = []
        for index, target in enumerate(chain):
            provider = self.registry.get(capability, target.provider)
            if provider is None:
                failures.append(
                    (target, not_configured(target, getattr(self.settings, "cloud_enabled", True)), None)
                )
                continue
            reason = skip(target) if skip is not None else None
            if reason is not None:  # the request needs what this target may not give it
                failures.append((target, reason, None))
                continue
            if deadline.expired:
                failures.append((target, "not tried: the request deadline was spent", None))
                break
            if failures:
                last_target, last_reason, _ = failures[-1]
                self.emit(
                    "fallback",
                    capability=capability,
                    from_target=str(last_target),
                    to_target=str(target),
                    reason=last_reason,
                )
            try:
                final = index == len(chain) - 1
                result = await self._try_target(
                    capability, target, provider, request, ctx, deadline, call, stream, final
                )
            except _Skipped as skipped:
                self.emit("skip", target=str(target), capability=capability, reason=skipped.state)
                failures.append((target, skipped.reason, None))
                continue
            except ProviderError as exc:
                exc.provider = exc.provider or str(target)
                if exc.kind not in FAILOVER_KINDS:
                    raise  # content filter, bad request: the client must see it, never a fallback
                self.failover_log.failed(target, exc, has_next=index + 1 < len(chain))
                failures.append((target, describe_error(exc), exc))
                continue
            ctx.provider = str(target)
            ctx.fallback = index > 0
            return result
        raise exhausted(capability, failures, deadline)

    async def _try_target(
        self,
        capability: Capability,
        target: Target,
        provider: Any,
        request: Any,
        ctx: Any,
        deadline: Deadline,
        call: Callable[[Any, Any], Awaitable[T]],
        stream: bool,
        final: bool,
    ) -> T:
        """Breaker check + retries on one target. Raises _Skipped or the last ProviderError.

        An attempt may take the remaining budget, but at most ``upstream_timeout_s`` (or, for a
        stream's first chunk, ``deadlines.first_byte``) so that a hung target leaves time for the
        targets after it. The chain's last target has nothing after it: it gets the whole rest.
        """
        breaker = self.breakers.get(target)
        routed = self._request_for(target, request)
        number = 0
        last_error: ProviderError | None = None

        async def attempt(timeout_s: float) -> T:
            nonlocal number, last_error
            permit = await breaker.acquire(lease_s=timeout_s + 1.0)
            if not permit.allowed:
                raise _Skipped(refusal(permit, last_error), breaker_label(permit))
            number += 1
            started = time.perf_counter()
            try:
                result = await bounded(lambda: classify_bugs(str(target), call(provider, routed)), timeout_s)
            except ProviderError as exc:
                seconds = time.perf_counter() - started
                ctx.upstream_s += seconds
                exc.provider = exc.provider or str(target)
                last_error = exc
                await breaker.record_error(permit, exc)
                self.attempted(target, capability, "error", seconds, exc.kind, number, exc.code)
                raise
            seconds = time.perf_counter() - started
            ctx.upstream_s += seconds
            await breaker.record(permit, True)
            self.attempted(target, capability, "ok", seconds, None, number)
            if stream:
                first, rest = result  # type: ignore[misc]
                return guarded_stream(  # type: ignore[return-value]
                    first, rest, target=str(target), stall_s=stall_s, on_break=on_break
                )
            return result

        stall_s = float(self.settings.deadlines.first_byte)

        async def on_break(exc: ProviderError) -> None:
            self.attempted(target, capability, "interrupted", 0.0, exc.kind, number)
            await breaker.record_error(Permit(True, BreakerState.CLOSED), exc)

        def on_retry(failed: int, error: ProviderError, delay: float) -> None:
            log.info("retrying %s in %.2fs after %s", target, delay, describe_error(error))
            self.emit(
                "retry",
                target=str(target),
                capability=capability,
                attempt=failed,
                error_kind=error.kind.value,
                delay_s=delay,
            )

        cap: float | None = None
        if not final:
            cap = float(self.settings.deadlines.first_byte if stream else self.settings.upstream_timeout_s)
        return await self.retry.call(attempt, deadline, attempt_cap_s=cap, on_retry=on_retry)

    def attempted(
        self,
        target: Target,
        capability: str,
        outcome: str,
        seconds: float,
        kind: ErrorKind | None,
        number: int,
        code: str | None = None,
    ) -> None:
        """Reports one upstream call to the listeners (the "attempt" event; policies/asr_stream.py too)."""
        self.emit(
            "attempt",
            target=str(target),
            capability=capability,
            outcome=outcome,
            seconds=seconds,
            error_kind=kind.value if kind else None,
            error_code=code,
            number=number,
        )

    # ------------------------------------------------------------------ public calls

    async def chat(
        self,
        request: ChatRequest,
        ctx: Any,
        check: Callable[[ChatResult], None] | None = None,
        skip: Callable[[Target], str | None] | None = None,
    ) -> ChatResult:
        """``check(result)`` may raise a ProviderError: the answer then counts as a failed attempt
        of its target (retried, then the next target), as for answers with a requested shape."""

        async def call(p: Any, r: ChatRequest) -> ChatResult:
            result = await p.chat(r)
            if check is not None:
                check(result)
            return result

        return await self._run("chat", request, ctx, call, skip=skip)

    async def chat_collected(
        self,
        request: ChatRequest,
        ctx: Any,
        collect: Callable[[AsyncIterator[ChatChunk]], Awaitable[list[ChatChunk]]],
        skip: Callable[[Target], str | None] | None = None,
    ) -> list[ChatChunk]:
        """A stream gathered whole inside each attempt (``collect`` may raise to fail it): a cut
        or a rejected answer then falls over before anything reaches the client."""

        async def call(p: Any, r: ChatRequest) -> list[ChatChunk]:
            stream = p.chat_stream(r)
            try:
                return await collect(stream)
            finally:
                await close_quietly(stream)

        return await self._run("chat", request, ctx, call, skip=skip)

    async def transcribe(
        self, request: TranscribeRequest, ctx: Any, skip: Callable[[Target], str | None] | None = None
    ) -> Transcript:
        return await self._run("asr", request, ctx, lambda p, r: p.transcribe(r), skip=skip)

    def transcribe_stream(
        self, request: TranscribeRequest, audio: AsyncIterator[bytes], ctx: Any
    ) -> AsyncIterator[TranscriptPart]:
        """Partial transcripts while ``audio`` arrives, then the final one (policies/asr_stream.py:
        the first streaming target, or the whole utterance through ``transcribe`` when it fails)."""
        final_timeout_s = min(
            float(self.settings.upstream_timeout_s), float(self.settings.deadlines.first_byte)
        )
        return asr_stream.transcribe_stream(self, request, audio, ctx, final_timeout_s=final_timeout_s)

    async def synthesize(
        self, request: SynthesizeRequest, ctx: Any, skip: Callable[[Target], str | None] | None = None
    ) -> SpeechResult:
        return await self._run("tts", request, ctx, lambda p, r: p.synthesize(r), skip=skip)

    async def embed(
        self, request: EmbedRequest, ctx: Any, skip: Callable[[Target], str | None] | None = None
    ) -> EmbedResult:
        """``skip`` passes over targets (a knowledge store's vectors pin one embedding space)."""
        return await self._run("embedding", request, ctx, lambda p, r: p.embed(r), skip=skip)

    async def rerank(self, request: RerankRequest, ctx: Any) -> RerankResult:
        return await self._run("rerank", request, ctx, lambda p, r: p.rerank(r))

    async def _open_stream(
        self,
        capability: Capability,
        request: Any,
        ctx: Any,
        method: str,
        skip: Callable[[Target], str | None] | None = None,
    ) -> AsyncIterator:
        async def first_and_rest(p: Any, r: Any) -> tuple[Any, AsyncIterator]:
            it = getattr(p, method)(r).__aiter__()
            try:
                first = await it.__anext__()
            except StopAsyncIteration:
                await close_quietly(it)
                raise ProviderError(ErrorKind.RETRYABLE, "the stream ended before its first chunk") from None
            except BaseException:
                await close_quietly(it)
                raise
            return first, it

        return await self._run(capability, request, ctx, first_and_rest, stream=True, skip=skip)

    async def chat_stream(
        self, request: ChatRequest, ctx: Any, skip: Callable[[Target], str | None] | None = None
    ) -> AsyncIterator[ChatChunk]:
        """Returns once the first chunk is in hand; later failures raise StreamInterrupted."""
        return await self._open_stream("chat", request, ctx, "chat_stream", skip)

    async def synthesize_stream(
        self, request: SynthesizeRequest, ctx: Any, skip: Callable[[Target], str | None] | None = None
    ) -> AsyncIterator[SpeechChunk]:
        return await self._open_stream("tts", request, ctx, "synthesize_stream", skip)


# ---------------------------------------------------------------------- helpers
