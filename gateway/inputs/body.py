"""One body-read timeout for every HTTP route: a body that stops arriving is a 408, not a hold.

Why: a request's key slot (and a worker of this process) is held while its body arrives, and
nothing bounded how long a client may pause. ``guard_body`` wraps the ASGI ``receive`` of a
request: each wait for the next body chunk may last at most ``idle_timeout_s``; past it the
reader (a route, a form parser, the admission check) gets an ``APIError`` 408, which the
app's handlers answer, and the request's slot is released on the way out. A body that keeps
sending, however slowly, is never cut. Once the body is complete ``receive`` is passed through
untouched (it then only waits for the client to disconnect, which may take as long as a stream).
"""

from __future__ import annotations

import asyncio

from starlette.types import Message, Receive

from gateway.errors import APIError

#: Methods whose requests may carry a body.
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def body_stalled(idle_timeout_s: float) -> APIError:
    return APIError(
        408,
        f"The request body stalled: no data arrived for {idle_timeout_s:g} s.",
        code="request_timeout",
        headers={"connection": "close"},
    )


def guard_body(receive: Receive, idle_timeout_s: float) -> Receive:
    """``receive`` with the idle timeout on body chunks (see the module docstring)."""
    complete = False

    async def guarded() -> Message:
        nonlocal complete
        if complete:
            return await receive()
        try:
            async with asyncio.timeout(idle_timeout_s):
                message = await receive()
        except TimeoutError:
            raise body_stalled(idle_timeout_s) from None
        if message["type"] != "http.request" or not message.get("more_body", False):
            complete = True
        return message

    return guarded
