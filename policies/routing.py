"""Ordered fallback chains per capability.

The router resolves a client's model name to a chain of ``provider:model`` targets and
walks it. It records what happened on the request context (provider, fallback, upstream
time) so the gateway can put it in the response headers.

NOTE: this is the first, plain version (no retry, no breaker). The resilience work
extends ``_attempt`` with retries and circuit breakers; the public interface stays.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from providers.base import (
    FAILOVER_KINDS,
    Capability,
    ChatChunk,
    ChatRequest,
    ChatResult,
    ErrorKind,
    ProviderError,
    SpeechChunk,
    SpeechResult,
    SynthesizeRequest,
    Transcript,
    TranscribeRequest,
)

log = logging.getLogger("talkgate.routing")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Target:
    provider: str  # "bailian" | "local"
    model: str

    @classmethod
    def parse(cls, spec: str) -> Target:
        provider, sep, model = spec.partition(":")
        if not sep or not provider or not model:
            raise ValueError(f"route target {spec!r} must look like 'provider:model'")
        return cls(provider, model)

    def __str__(self) -> str:
        return f"{self.provider}:{self.model}"


class UnknownModelError(Exception):
    def __init__(self, capability: str, model: str, available: list[str]) -> None:
        super().__init__(
            f"The model '{model}' does not exist for {capability}. Available: {', '.join(available) or 'none'}"
        )
        self.capability = capability
        self.model = model
        self.available = available


class StreamInterrupted(Exception):
    """A stream failed after its first byte reached the client: no failover is allowed any more."""

    def __init__(self, cause: ProviderError) -> None:
        super().__init__(cause.message)
        self.cause = cause


class ProviderRegistry:
    """Provider instances by capability and backend family ("bailian", "local")."""

    def __init__(self) -> None:
        self._by_cap: dict[str, dict[str, Any]] = {"chat": {}, "asr": {}, "tts": {}}

    def register(self, capability: Capability, provider: Any) -> None:
        self._by_cap[capability][provider.name] = provider

    def replace(self, capability: Capability, provider: Any) -> Any | None:
        old = self._by_cap[capability].get(provider.name)
        self._by_cap[capability][provider.name] = provider
        return old

    def get(self, capability: Capability, name: str) -> Any | None:
        return self._by_cap[capability].get(name)

    def all(self) -> list[tuple[str, Any]]:
        return [(cap, p) for cap, d in self._by_cap.items() for p in d.values()]


class Router:
    def __init__(self, settings: Any, registry: ProviderRegistry) -> None:
        self.settings = settings
        self.registry = registry
        #: Observers (metrics, logs) called as listener(event, fields); events: "attempt" (target,
        #: capability, outcome, seconds, error_kind), "retry", "fallback" (from_target, to_target),
        #: "breaker" (target, state). Listeners must be cheap and must not raise.
        self.listeners: list[Callable[[str, dict[str, Any]], None]] = []

    def emit(self, event: str, **fields: Any) -> None:
        for listener in self.listeners:
            try:
                listener(event, fields)
            except Exception:  # an observer must never break a request
                log.exception("routing listener failed")

    # ------------------------------------------------------------------ resolution

    def _route(self, capability: Capability) -> Any:
        return self.settings.routes[capability]

    def models(self, capability: Capability) -> list[str]:
        """Model names a client may ask for (aliases included)."""
        route = self._route(capability)
        names: list[str] = []
        for spec in [*route.chain, *(s for c in route.chains.values() for s in c)]:
            names.append(Target.parse(spec).model)
        names += route.extra_models + list(route.chains) + list(route.aliases)
        return list(dict.fromkeys(names))

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

    # ------------------------------------------------------------------ walking the chain

    async def _run(
        self,
        capability: Capability,
        request: Any,
        ctx: Any,
        call: Callable[[Any, Any], Awaitable[T]],
    ) -> T:
        chain = self.resolve(capability, request.model)
        last: ProviderError | None = None
        for index, target in enumerate(chain):
            provider = self.registry.get(capability, target.provider)
            if provider is None:
                last = ProviderError(
                    ErrorKind.UNAVAILABLE, f"{target.provider} is not configured", provider=str(target)
                )
                continue
            started = time.perf_counter()
            try:
                result = await call(provider, self._request_for(target, request))
            except ProviderError as exc:
                exc.provider = exc.provider or str(target)
                last = exc
                if exc.kind not in FAILOVER_KINDS:
                    raise
                log.warning("target %s failed (%s); trying the next one", target, exc.kind.value)
                continue
            finally:
                ctx.upstream_s += time.perf_counter() - started
            ctx.provider = str(target)
            ctx.fallback = index > 0
            return result
        raise last or ProviderError(ErrorKind.UNAVAILABLE, f"no provider available for {capability}")

    async def chat(self, request: ChatRequest, ctx: Any) -> ChatResult:
        return await self._run("chat", request, ctx, lambda p, r: p.chat(r))

    async def transcribe(self, request: TranscribeRequest, ctx: Any) -> Transcript:
        return await self._run("asr", request, ctx, lambda p, r: p.transcribe(r))

    async def synthesize(self, request: SynthesizeRequest, ctx: Any) -> SpeechResult:
        return await self._run("tts", request, ctx, lambda p, r: p.synthesize(r))

    async def _open_stream(self, capability: Capability, request: Any, ctx: Any, method: str) -> AsyncIterator:
        async def first_and_rest(p: Any, r: Any) -> AsyncIterator:
            it = getattr(p, method)(r).__aiter__()
            first = await it.__anext__()
            return _chain_first(first, it)

        return await self._run(capability, request, ctx, first_and_rest)

    async def chat_stream(self, request: ChatRequest, ctx: Any) -> AsyncIterator[ChatChunk]:
        """Returns once the first chunk is in hand; later failures raise StreamInterrupted."""
        return await self._open_stream("chat", request, ctx, "chat_stream")

    async def synthesize_stream(self, request: SynthesizeRequest, ctx: Any) -> AsyncIterator[SpeechChunk]:
        return await self._open_stream("tts", request, ctx, "synthesize_stream")


async def _chain_first(first: Any, rest: AsyncIterator) -> AsyncIterator:
    yield first
    try:
        async for item in rest:
            yield item
    except ProviderError as exc:
        raise StreamInterrupted(exc) from exc
