"""A lean ASGI path for the hottest route, beside (not instead of) its FastAPI route.

Under load one event loop spends about half of a chat request's CPU in FastAPI's per-request
plumbing: three middleware layers inside ours, route matching, dependency solving and exit
stacks. ``RequestContextMiddleware`` hands an exact ``(method, path)`` match straight to the
lean endpoint registered here; the FastAPI route stays registered for OpenAPI, for tests that
audit routes, and for anything the lean path does not take (other methods, a root_path).

A lean endpoint does what the route and its ``require_scope`` dependency did: it calls the same
functions (``gateway.auth.run_admitted``) and answers errors with the app's own exception
handlers, so bodies, headers, limits and usage rows are the same.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

#: ``endpoint(request, send)``: sends the whole response; raises what the route would raise.
LeanEndpoint = Callable[[Request, Send], Awaitable[None]]


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
