"""The NLS side of ``talkgate sim``: the POP token endpoint and the ``/ws/v1`` gateway on one aiohttp port.

A second port, because the official NLS Python SDK's handshake (two ``Sec-WebSocket-Key``
headers) is refused by the ``websockets`` server under the Bailian simulator's uvicorn, while
aiohttp's server answers it correctly. It runs on the same event loop as the Bailian simulator
(started from its lifespan) and shares its ``SimState``: one fault book, request log and latency
settings for both clouds.
"""

from __future__ import annotations

import ssl

from aiohttp import web

from gateway.sim.nls.context import NLS_KEY, SIM_KEY
from gateway.sim.nls.gateway import nls_ws
from gateway.sim.nls.pop_token import create_token
from gateway.sim.nls.state import NlsState
from gateway.sim.state import SimState

#: CreateToken requests are a few hundred bytes; anything far larger is refused (413).
MAX_BODY_BYTES = 64 * 1024


def create_nls_app(sim: SimState, nls: NlsState) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[SIM_KEY] = sim
    app[NLS_KEY] = nls
    for path in ("/", "/pop/{version}/tokens"):
        app.router.add_get(path, create_token)
        app.router.add_post(path, create_token)
    app.router.add_get("/ws/v1", nls_ws)
    return app


class NlsServer:
    """The NLS app on ``host:port`` (0: a free port), on the running loop."""

    def __init__(self, sim: SimState, nls: NlsState) -> None:
        self.app = create_nls_app(sim, nls)
        self.runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=1.0)
        self.port = 0

    async def start(self, host: str, port: int, ssl_context: ssl.SSLContext | None = None) -> int:
        """Bind and serve (https/wss with ``ssl_context``); returns the bound port."""
        await self.runner.setup()
        site = web.TCPSite(self.runner, host, port, reuse_address=True, ssl_context=ssl_context)
        await site.start()
        server = site._server  # the bound socket tells the port chosen for port 0
        assert server is not None and server.sockets
        self.port = server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        await self.runner.cleanup()
