"""Per-request context and the ASGI middleware that stamps the contract headers.

A pure ASGI middleware (not BaseHTTPMiddleware) keeps the added latency in microseconds.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send


@dataclass(slots=True)
class RequestContext:
    request_id: str
    started: float = field(default_factory=time.perf_counter)
    upstream_s: float = 0.0  # time spent waiting on providers, excluded from overhead
    provider: str | None = None  # e.g. "bailian:qwen-plus"
    fallback: bool = False
    cache: str = "bypass"  # hit | miss | bypass
    tenant: str | None = None
    key_id: str | None = None
    user: str | None = None  # stable user id for experiments (x-talkgate-user or key)
    variant: str | None = None  # experiment variant, if any
    extra: dict[str, Any] = field(default_factory=dict)

    def overhead_ms(self) -> float:
        return max(0.0, (time.perf_counter() - self.started - self.upstream_s) * 1000.0)


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
        rid = None
        for k, v in scope.get("headers", ()):
            if k == b"x-request-id":
                rid = v.decode("latin-1")[:128]
                break
        ctx = RequestContext(request_id=rid or uuid.uuid4().hex)
        scope["talkgate.ctx"] = ctx
        is_v1 = scope.get("path", "").startswith("/v1/")

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {k.lower() for k, _ in headers}
                headers.append((b"x-request-id", ctx.request_id.encode("latin-1")))
                if is_v1:
                    if b"x-talkgate-provider" not in present:
                        headers.append((b"x-talkgate-provider", (ctx.provider or "none").encode()))
                    if b"x-talkgate-fallback" not in present:
                        headers.append((b"x-talkgate-fallback", b"1" if ctx.fallback else b"0"))
                    if b"x-talkgate-cache" not in present:
                        headers.append((b"x-talkgate-cache", ctx.cache.encode()))
                    headers.append((b"x-talkgate-overhead-ms", f"{ctx.overhead_ms():.3f}".encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_wrapper)
