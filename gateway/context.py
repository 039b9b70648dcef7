"""Per-request context and the ASGI middleware that stamps the contract headers.

A pure ASGI middleware (not BaseHTTPMiddleware) keeps the added latency in microseconds.
"""

from __future__ import annotations

import logging
import os
import re
import time
import uuid
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("talkgate.context")

#: The current request's id, for log records (gateway/logs.py); None outside a request.
request_id_var: ContextVar[str | None] = ContextVar("talkgate_request_id", default=None)
#: The id the client sent in x-request-id (when it was accepted), also put on log records.
client_request_id_var: ContextVar[str | None] = ContextVar("talkgate_client_request_id", default=None)

#: A client's x-request-id is echoed only if it looks like this (no spaces, quotes, control
#: characters or unbounded length); anything else is replaced by a fresh id.
CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


@dataclass(slots=True)
class RequestContext:
    """One request's state. ``request_id`` is always the gateway's own (unique) id: it names the
    usage row and the log lines; ``client_request_id`` is the client's accepted x-request-id,
    which the response echoes instead when there is one."""

    request_id: str
    started: float = field(default_factory=time.perf_counter)
    upstream_s: float = 0.0  # time spent waiting on providers, excluded from overhead
    #: local media work that is not the gateway's own overhead (/v1/talk: face preparation,
    #: audio decoding, rendering and encoding), excluded from overhead like upstream_s
    work_s: float = 0.0
    client_request_id: str | None = None
    model: str | None = None  # the model the client asked for (usage rows)
    provider: str | None = None  # e.g. "bailian:qwen-plus"
    fallback: bool = False
    cache: str = "bypass"  # hit | miss | bypass
    tenant: str | None = None
    key_id: str | None = None
    user: str | None = None  # stable user id for experiments (x-talkgate-user or key)
    variant: str | None = None  # experiment variant, if any
    extra: dict[str, Any] = field(default_factory=dict)

    def overhead_ms(self) -> float:
        """x-talkgate-overhead-ms: wall time so far minus provider calls and local media work."""
        return max(0.0, (time.perf_counter() - self.started - self.upstream_s - self.work_s) * 1000.0)

    @property
    def echoed_id(self) -> str:
        """The x-request-id of the response: the client's accepted id, else the gateway's."""
        return self.client_request_id or self.request_id


def get_context(request: Request) -> RequestContext:
    ctx = request.scope.get("talkgate.ctx")
    if ctx is None:  # routes mounted outside the middleware (tests)
        ctx = RequestContext(request_id=uuid.uuid4().hex)
        request.scope["talkgate.ctx"] = ctx
    return ctx


class RequestContextMiddleware:
    """Creates the RequestContext and adds x-request-id and x-talkgate-* headers to /v1 responses."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = user = None
        for k, v in scope.get("headers", ()):
            if k == b"x-request-id":
                rid = v.decode("latin-1")
            elif k == b"x-talkgate-user":
                user = v.decode("latin-1")[:256] or None
        if rid is not None and CLIENT_REQUEST_ID.fullmatch(rid) is None:
            rid = None  # unsafe to echo or log: the response gets the gateway's own id
        ctx = RequestContext(request_id=os.urandom(16).hex(), user=user, client_request_id=rid)
        scope["talkgate.ctx"] = ctx
        path = scope.get("path", "")
        is_v1 = path.startswith(("/v1/", "/api/v1/"))  # the OpenAI API and the DashScope front door
        app = self.app
        rid_token = request_id_var.set(ctx.request_id)
        client_token = client_request_id_var.set(rid) if rid is not None else None

        started = False
        status = 500
        overhead_s: float | None = None
        ttfb_s: float | None = None

        async def send_wrapper(message: Message) -> None:
            nonlocal started, status, overhead_s, ttfb_s
            if message["type"] == "http.response.body":
                if ttfb_s is None and message.get("body"):
                    ttfb_s = time.perf_counter() - ctx.started
            elif message["type"] == "http.response.start":
                started = True
                status = message["status"]
                ctx.extra["status"] = status  # for the usage row (gateway/auth.py)
                headers = list(message.get("headers", ()))
                present = {k.lower() for k, _ in headers}
                headers.append((b"x-request-id", ctx.echoed_id.encode("latin-1")))
                # e.g. x-ratelimit-* set by the auth dependency; the response's own headers win
                for name, value in ctx.extra.get("response_headers", {}).items():
                    if name.encode() not in present:
                        headers.append((name.encode(), value.encode("latin-1")))
                if is_v1:
                    if b"x-talkgate-provider" not in present:
                        headers.append((b"x-talkgate-provider", (ctx.provider or "none").encode()))
                    if b"x-talkgate-fallback" not in present:
                        headers.append((b"x-talkgate-fallback", b"1" if ctx.fallback else b"0"))
                    if b"x-talkgate-cache" not in present:
                        headers.append((b"x-talkgate-cache", ctx.cache.encode()))
                    overhead_ms = ctx.overhead_ms()
                    overhead_s = overhead_ms / 1000.0
                    headers.append((b"x-talkgate-overhead-ms", f"{overhead_ms:.3f}".encode()))
                message["headers"] = headers
            await send(message)

        try:
            try:
                await app(scope, receive, send_wrapper)
            except Exception:
                # Never a bare 500 page: answer with an OpenAI-shaped body and the contract headers.
                if started:
                    raise  # mid-body: the connection is aborted, which the client sees as a failure
                log.exception("unhandled error in %s %s", scope.get("method"), scope.get("path"))
                body = b'{"error":{"message":"Internal error in the gateway.","type":"server_error","param":null,"code":"internal_error"}}'
                await send_wrapper(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await send_wrapper({"type": "http.response.body", "body": body})

        finally:
            request_id_var.reset(rid_token)
            if client_token is not None:
                client_request_id_var.reset(client_token)
            _observe(scope, ctx, status, overhead_s, ttfb_s)


def _observe(
    scope: Scope, ctx: RequestContext, status: int, overhead_s: float | None, ttfb_s: float | None
) -> None:
    """Request-level metrics and experiment statistics, once per request, after the last byte."""
    app = scope.get("app")
    services = getattr(getattr(app, "state", None), "services", None)
    if services is None:
        return
    total_s = time.perf_counter() - ctx.started
    route = scope.get("route")
    template = getattr(route, "path", None) or "unmatched"
    try:
        if services.metrics is not None:
            services.metrics.observe_request(template, status, ctx, total_s, overhead_s, ttfb_s)
        if ctx.variant and services.experiments is not None:
            services.experiments.record(ctx.variant, total_s, status)
    except Exception:  # observability must never fail a request
        log.exception("recording request metrics failed")
