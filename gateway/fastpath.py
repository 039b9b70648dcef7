"""A lean ASGI path for the hottest route, beside (not instead of) its FastAPI route.

Under load one event loop spends about half of a chat request's CPU in FastAPI's per-request
plumbing: its outer middleware (server errors, telemetry, body limit), route matching,
dependency solving and exit stacks. ``GatewayApp`` hands an exact ``(method, path)`` match,
wrapped only in ``RequestContextMiddleware``, straight to the lean endpoint registered here; the
FastAPI route stays registered for OpenAPI, for tests that audit routes, and for anything the
lean path does not take (other methods, a root_path).

A lean endpoint does what the route and its ``require_scope`` dependency did: it calls the same
functions (``gateway.auth.run_admitted``) and answers errors with the app's own exception
handlers, so bodies, headers, limits and usage rows are the same.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.errors import APIError, error_response
from gateway.inputs.body import BODY_METHODS, guard_body
from gateway.inputs.hosts import HostCheck

#: ``endpoint(request, send)``: sends the whole response; raises what the route would raise.
LeanEndpoint = Callable[[Request, Send], Awaitable[None]]


class GatewayApp(FastAPI):
    """FastAPI, with the lean paths served before FastAPI's own middleware stack.

    A lean request still goes through ``RequestContextMiddleware`` (request id, contract
    headers, metrics, an OpenAI-shaped 500 for anything that escapes); everything else takes
    the normal FastAPI path, where the same middleware sits inside FastAPI's outer layers.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: ``(method, path) -> lean app``; filled by the factory once the routes exist (collect()).
        self.fast_paths: dict[tuple[str, str], ASGIApp] = {}
        self._lean_stack: ASGIApp | None = None
        #: body chunks may pause at most this long (gateway/inputs/body.py); None: no limit
        self.body_idle_timeout_s: float | None = None
        #: Host header check (gateway/inputs/hosts.py); None: any host
        self.host_check: HostCheck | None = None

    def serve_lean(self, wrap: Callable[[ASGIApp], ASGIApp]) -> None:
        """``wrap(dispatch)`` is the stack a lean request goes through (the context middleware)."""

        async def dispatch(scope: Scope, receive: Receive, send: Send) -> None:
            await self.fast_paths[(scope["method"], scope["path"])](scope, receive, send)

        self._lean_stack = wrap(dispatch)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.host_check is not None and scope["type"] in ("http", "websocket"):
            try:
                self.host_check.check(scope)
            except APIError as exc:
                if scope["type"] == "http":
                    await error_response(exc)(scope, receive, send)
                else:
                    await send({"type": "websocket.close", "code": 1008, "reason": exc.message})
                return
        if self.body_idle_timeout_s and scope["type"] == "http" and scope["method"] in BODY_METHODS:
            receive = guard_body(receive, self.body_idle_timeout_s)
        if (
            self._lean_stack is not None
            and scope["type"] == "http"
            and (scope["method"], scope["path"]) in self.fast_paths
            and not scope.get("root_path")
            and not self.root_path
        ):
            scope["app"] = self
            await self._lean_stack(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def _handler_for(handlers: dict[Any, Callable[..., Any]], exc: Exception) -> Callable[..., Any] | None:
    for cls in type(exc).__mro__:
        if cls in handlers:
            return handlers[cls]
    return None


def lean_app(route: APIRoute, endpoint: LeanEndpoint) -> ASGIApp:
    """The ASGI app that serves ``route`` through ``endpoint``."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        scope["route"] = route  # metrics template and usage row, as the router would set it
        scope["endpoint"] = route.endpoint
        scope["path_params"] = {}
        request = Request(scope, receive)
        try:
            await endpoint(request, send)
        except Exception as exc:
            handler = _handler_for(scope["app"].exception_handlers, exc)
            if handler is None:
                raise  # the context middleware answers an OpenAI-shaped 500
            if inspect.iscoroutinefunction(handler):
                response = await handler(request, exc)
            else:
                response = await run_in_threadpool(handler, request, exc)
            await response(scope, receive, send)

    return app


def collect(routes: list[Any]) -> dict[tuple[str, str], ASGIApp]:
    """``(method, path) -> lean app`` for every APIRoute whose endpoint has a ``lean_endpoint``.

    ``routes`` are the routers' own routes (the ones FastAPI puts in ``scope["route"]``), included
    in the app without a prefix."""
    table: dict[tuple[str, str], ASGIApp] = {}
    for route in routes:
        lean = getattr(getattr(route, "endpoint", None), "lean_endpoint", None)
        if isinstance(route, APIRoute) and lean is not None:
            for method in route.methods:
                table[(method, route.path)] = lean_app(route, lean)
    return table
