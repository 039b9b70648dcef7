"""Prometheus metrics: one registry per application, so two gateways in one process never collide.

Request-level figures are recorded once per request by the ASGI middleware (gateway/context.py)
from the RequestContext; routing events arrive through ``Router.listeners``; everything else
(talk stages, render speed, tokens, quotas, rate limiting) is pushed by the module that knows it
through the small methods below. Every method is a couple of dictionary lookups and an
increment: cheap enough for the hot path.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import Metric

from gateway.metrics_collectors import (
    GpuProbe,
    ScrapeCollector,
    inflight_family,
)

__all__ = [
    "BREAKER_STATES",
    "CONTENT_TYPE",
    "GpuProbe",
    "Metrics",
    "inflight_family",
    "split_target",
]

log = logging.getLogger("talkgate.metrics")

CONTENT_TYPE = CONTENT_TYPE_LATEST

#: Numeric breaker states for ``talkgate_breaker_state`` (alerts compare against 2).
BREAKER_STATES = {"closed": 0, "half_open": 1, "half-open": 1, "open": 2}

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)
_STAGE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)

#: Route template -> capability, for cache results read off the request context.
_ROUTE_CAPABILITY = {
    "/v1/chat/completions": "chat",
    "/v1/audio/transcriptions": "asr",
    "/v1/audio/speech": "tts",
    "/v1/talk": "talk",
}


def split_target(target: str | None) -> tuple[str, str]:
    """``"bailian:qwen-plus"`` -> ``("bailian", "qwen-plus")``; no target -> ``("none", "none")``."""
    if not target:
        return "none", "none"
    provider, _, model = str(target).partition(":")
    return provider, model or "none"


class Metrics:
    """All gateway metrics on a private registry; ``render()`` is the /metrics body."""

    def __init__(self, *, process: bool = True) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        # --- requests (recorded by the middleware)
        self.requests = Counter(
            "talkgate_requests",
            "HTTP requests by route template, status, serving provider/model and experiment variant.",
            ["route", "status", "provider", "model", "variant"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "talkgate_request_duration_seconds",
            "Whole request time, first byte in to last byte out.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_seconds = Histogram(
            "talkgate_request_upstream_seconds",
            "Time a request spent waiting on providers (all attempts).",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.overhead_seconds = Histogram(
            "talkgate_gateway_overhead_seconds",
            "Time to the response head minus upstream time: what the gateway itself adds.",
            ["route"],
            buckets=_OVERHEAD_BUCKETS,
            registry=r,
        )
        self.ttfb_seconds = Histogram(
            "talkgate_time_to_first_byte_seconds",
            "Time from request start to the first body byte sent (streams: the first token/audio).",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.key_requests = Counter(
            "talkgate_key_requests",
            "API requests per key (anonymous without a key).",
            ["key_id", "tenant"],
            registry=r,
        )
        self.cache_requests = Counter(
            "talkgate_cache_requests",
            "Response cache lookups by capability and result.",
            ["capability", "result"],
            registry=r,
        )
        self.rate_limited_requests = Counter(
            "talkgate_rate_limited_requests",
            "Requests refused by a rate limit, quota or concurrency cap.",
            ["tenant", "reason"],
            registry=r,
        )
        # --- routing (Router.listeners)
        self.attempts = Counter(
            "talkgate_upstream_attempts",
            "Provider attempts by target and outcome.",
            ["capability", "target", "outcome", "error_kind"],
            registry=r,
        )
        self.attempt_seconds = Histogram(
            "talkgate_upstream_attempt_duration_seconds",
            "Duration of one provider attempt.",
            ["capability", "target"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.skips = Counter(
            "talkgate_target_skips",
            "Targets passed over without an upstream call (open breaker, not configured).",
            ["capability", "target", "reason"],
            registry=r,
        )
        self.retries = Counter(
            "talkgate_retries", "Retries on the same target.", ["capability", "target"], registry=r
        )
        self.fallbacks = Counter(
            "talkgate_fallbacks",
            "Moves from one target to the next in a fallback chain.",
            ["capability", "from_target", "to_target"],
            registry=r,
        )
        self.breaker_state = Gauge(
            "talkgate_breaker_state",
            "Circuit breaker state per target: 0 closed, 1 half-open, 2 open.",
            ["target"],
            registry=r,
        )
        # --- usage volume
        self.tokens_total = Counter(
            "talkgate_tokens",
            "LLM tokens by provider, model and kind (prompt/completion).",
            ["provider", "model", "kind"],
            registry=r,
        )
        self.characters_total = Counter(
            "talkgate_tts_characters",
            "Characters synthesised by provider and model.",
            ["provider", "model"],
            registry=r,
        )
        self.audio_seconds_total = Counter(
            "talkgate_audio_seconds",
            "Seconds of audio transcribed (asr) or synthesised (tts).",
            ["capability", "provider", "model"],
            registry=r,
        )
        # --- digital human
        self.talk_stage_seconds = Histogram(
            "talkgate_talk_stage_seconds",
            "Latency of one talk pipeline stage (asr, llm, tts, render).",
            ["stage"],
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.render_frames = Counter(
            "talkgate_render_frames", "Lip-sync frames rendered.", ["device"], registry=r
        )
        self.render_seconds = Counter(
            "talkgate_render_seconds", "Seconds spent rendering frames.", ["device"], registry=r
        )
        self.render_fps = Gauge(
            "talkgate_render_fps", "Frames per second of the last render.", ["device"], registry=r
        )
        # --- SaaS
        self.quota_used_ratio = Gauge(
            "talkgate_quota_used_ratio",
            "Share of a tenant's monthly quota spent, as of its last request (0..1).",
            ["tenant", "quota"],
            registry=r,
        )
        # --- operations
        self.model_swaps = Counter(
            "talkgate_model_swaps",
            "Hot swaps and rollbacks by capability and final status.",
            ["capability", "kind", "status"],
            registry=r,
        )
        self.tool_calls_total = Counter(
            "talkgate_chat_tool_calls", "Tool calls returned to clients, by target.", ["target"], registry=r
        )
        self.vision_requests = Counter(
            "talkgate_chat_vision_requests", "Chat requests with images, by target.", ["target"], registry=r
        )
        self.schema_violations = Counter(
            "talkgate_chat_schema_violations",
            "Answers rejected for breaking the requested shape (tools, JSON schema), by target.",
            ["target"],
            registry=r,
        )
        self._request_children: dict[tuple[Any, ...], Any] = {}
        self._route_children: dict[str, tuple[Any, ...]] = {}
        self._children: dict[tuple[Any, ...], Any] = {}  # (metric, *labels) -> child, see _child
        self._scrape = ScrapeCollector()
        r.register(self._scrape)
        if process:
            ProcessCollector(registry=r)

    # ------------------------------------------------------------------ request level

    def observe_request(
        self,
        route: str,
        status: int,
        ctx: Any,
        total_s: float,
        overhead_s: float | None,
        ttfb_s: float | None,
    ) -> None:
        """Called once per HTTP request by the middleware, after the last byte went out."""
        provider, model = split_target(ctx.provider)
        key = (route, status, provider, model, ctx.variant or "")
        counter = self._request_children.get(key)
        if counter is None:  # label lookups cost microseconds: resolve each series once
            counter = self._request_children[key] = self.requests.labels(route, str(status), *key[2:])
        counter.inc()
        hists = self._route_children.get(route)
        if hists is None:
            hists = self._route_children[route] = tuple(
                h.labels(route)
                for h in (
                    self.request_seconds,
                    self.upstream_seconds,
                    self.overhead_seconds,
                    self.ttfb_seconds,
                )
            )
        hists[0].observe(total_s)
        if ctx.upstream_s:
            hists[1].observe(ctx.upstream_s)
        if overhead_s is not None:
            hists[2].observe(overhead_s)
        if ttfb_s is not None:
            hists[3].observe(ttfb_s)
        if route.startswith("/v1/"):
            self._child(self.key_requests, ctx.key_id or "anonymous", ctx.tenant or "default").inc()
            capability = _ROUTE_CAPABILITY.get(route, route)
            if ctx.cache in ("hit", "miss"):
                self._child(self.cache_requests, capability, ctx.cache).inc()
            usage = ctx.extra.get("usage") if ctx.extra else None
            if usage:
                self._usage(capability, provider, model, usage)

    def _child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, resolved once per label set (a lookup costs microseconds)."""
        key = (metric, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def _usage(self, capability: str, provider: str, model: str, usage: dict[str, Any]) -> None:
        """Volumes from the request's usage row (``gateway.usage.record``): one source for both."""
        if usage.get("tokens_in"):
            self._child(self.tokens_total, provider, model, "prompt").inc(usage["tokens_in"])
        if usage.get("tokens_out"):
            self._child(self.tokens_total, provider, model, "completion").inc(usage["tokens_out"])
        if usage.get("characters"):
            self.characters_total.labels(provider, model).inc(usage["characters"])
        if usage.get("audio_seconds"):
            self.audio_seconds_total.labels(capability, provider, model).inc(usage["audio_seconds"])

    # ------------------------------------------------------------------ routing events

    def on_router_event(self, event: str, fields: dict[str, Any]) -> None:
        """A ``Router.listeners`` subscriber: attempt / retry / fallback / breaker."""
        cap = str(fields.get("capability") or "")
        if event == "attempt":
            target = str(fields.get("target"))
            outcome = str(fields.get("outcome") or "ok")
            kind = fields.get("error_kind")
            kind = getattr(kind, "value", kind) or ""
            self.attempts.labels(cap, target, outcome, str(kind)).inc()
            if fields.get("error_code") == "SchemaViolation":
                self.schema_violations.labels(target).inc()
            seconds = fields.get("seconds")
            if seconds is not None:
                self.attempt_seconds.labels(cap, target).observe(float(seconds))
        elif event == "retry":
            self.retries.labels(cap, str(fields.get("target"))).inc()
        elif event == "fallback":
            self.fallbacks.labels(cap, str(fields.get("from_target")), str(fields.get("to_target"))).inc()
        elif event == "skip":
            self.skips.labels(cap, str(fields.get("target")), str(fields.get("reason") or "")).inc()
        elif event == "breaker":
            self.breaker(str(fields.get("target")), fields.get("state"))

    def breaker(self, target: str, state: Any) -> None:
        name = str(getattr(state, "value", state)).lower()
        self.breaker_state.labels(target).set(BREAKER_STATES.get(name, 0))

    # ------------------------------------------------------------------ pushed by other modules

    def cache(self, capability: str, result: str) -> None:
        """A cache lookup made outside an HTTP request's own ctx.cache (e.g. per talk sentence)."""
        self.cache_requests.labels(capability, result).inc()

    def rate_limited(self, tenant: str | None = None, reason: str = "rate") -> None:
        self.rate_limited_requests.labels(tenant or "default", reason).inc()

    def tokens(self, target: str | None, prompt: int, completion: int) -> None:
        provider, model = split_target(target)
        if prompt:
            self.tokens_total.labels(provider, model, "prompt").inc(prompt)
        if completion:
            self.tokens_total.labels(provider, model, "completion").inc(completion)

    def characters(self, target: str | None, count: int) -> None:
        provider, model = split_target(target)
        self.characters_total.labels(provider, model).inc(count)

    def audio_seconds(self, capability: str, target: str | None, seconds: float) -> None:
        provider, model = split_target(target)
        self.audio_seconds_total.labels(capability, provider, model).inc(max(0.0, seconds))

    def observe_talk_stage(self, stage: str, seconds: float) -> None:
        self.talk_stage_seconds.labels(stage).observe(seconds)

    def observe_render(self, frames: int, seconds: float, device: str = "cpu") -> None:
        self.render_frames.labels(device).inc(frames)
        self.render_seconds.labels(device).inc(max(0.0, seconds))
        if seconds > 0:
            self.render_fps.labels(device).set(frames / seconds)

    def observe_talk(self, timings_ms: dict[str, float], frames: int, renderer: str) -> None:
        """One /v1/talk run: stage latencies (``asr_ms``, ``llm_ms``, ``tts_ms``, ``render_ms``) and fps."""
        for stage in ("asr", "llm", "tts", "render"):
            ms = timings_ms.get(f"{stage}_ms")
            if ms:
                self.talk_stage_seconds.labels(stage).observe(ms / 1000.0)
        render_ms = timings_ms.get("render_ms") or 0.0
        if frames and render_ms > 0:
            self.observe_render(frames, render_ms / 1000.0, renderer)

    def quota(self, tenant: str, quota: str, used: float, limit: float) -> None:
        """A ``QuotaTracker.observer``: the tenant's use of one quota (tokens, tts_chars, ...)."""
        if limit > 0:
            self.quota_used_ratio.labels(tenant, quota).set(min(used / limit, 1.0))

    def vision(self, target: str | None) -> None:
        self.vision_requests.labels(target or "unknown").inc()

    def tool_calls(self, target: str | None, count: int) -> None:
        if count:
            self.tool_calls_total.labels(target or "unknown").inc(count)

    def swap(self, capability: str, kind: str, status: str) -> None:
        self.model_swaps.labels(capability, kind, status).inc()

    def init_targets(self, targets: Iterable[str]) -> None:
        """Start every known target's breaker gauge at closed, so dashboards show them from the start."""
        for target in targets:
            self.breaker_state.labels(target).set(0)

    def register_gpu_module(self, module: str, probe: GpuProbe) -> None:
        """``probe()`` -> {device: bytes} held by ``module``; read at scrape time, errors ignored."""
        self._scrape.gpu_probes[module] = probe

    def add_collector(self, collect: Callable[[], Iterable[Metric]]) -> None:
        """Extra families computed at scrape time (e.g. in-flight calls per provider instance)."""
        self._scrape.extra.append(collect)

    def render(self) -> bytes:
        return generate_latest(self.registry)
