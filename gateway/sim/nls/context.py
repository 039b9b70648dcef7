"""What the NLS handlers share: the app keys of the simulator state, and waiting out a hung call.

A leaf module, so the handlers (``pop_token``, ``gateway``) and ``server`` import it and not each other.
"""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import web

from gateway.sim.http_common import HANG_MAX_S
from gateway.sim.nls.state import NlsState
from gateway.sim.state import SimState

SIM_KEY = web.AppKey("sim", SimState)
NLS_KEY = web.AppKey("nls", NlsState)


async def hang(request: web.Request) -> web.StreamResponse:
    """Answer nothing until the client goes away (or ``HANG_MAX_S``), like a stuck upstream."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + HANG_MAX_S
    while loop.time() < deadline:
        transport = request.transport
        if transport is None or transport.is_closing():
            break
        await asyncio.sleep(0.05)
    raise asyncio.CancelledError


async def wait_closed(ws: web.WebSocketResponse) -> None:
    """A hung task: read and drop frames until the client closes (or ``HANG_MAX_S``)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(HANG_MAX_S):
            async for _ in ws:
                pass
