"""The Bailian (DashScope) simulator as one ASGI app: HTTP, SSE and WebSocket on a single port.

``create_app`` is used by tests (in-process uvicorn thread) and ``run_simulator`` by
``talkgate sim --port P``. Wire formats follow ``reference/dashscope-protocol.md``, quirks included.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute

from gateway.dashscope.bodies import INFERENCE_WS_PATHS, json_response, new_request_id
from gateway.sim import compat, customization, embedding, generation, multimodal, rerank
from gateway.sim.config import SimConfig
from gateway.sim.control import routes as control_routes
from gateway.sim.exposure import UnsafeExposure, check_exposure, control_token_from_env
from gateway.sim.http_common import install_log_filter
from gateway.sim.nls.state import NlsSimConfig, NlsState
from gateway.sim.state import SimState
from gateway.sim.ws import WS_MAX_MESSAGE_BYTES, inference_ws


async def _health(request: Request) -> Response:
    return json_response({"status": "ok", "service": "talkgate-bailian-simulator"})


async def _not_found(request: Request, exc: Exception) -> Response:
    body = {
        "code": "InvalidURL",
        "message": f"Unsupported path: {request.url.path}",
        "request_id": new_request_id(),
    }
    return json_response(body, 404)


async def _bad_method(request: Request, exc: Exception) -> Response:
    body = {
        "code": "InvalidParameter",
        "message": f"Method {request.method} not allowed.",
        "request_id": new_request_id(),
    }
    return json_response(body, 405)


def create_app(
    config: SimConfig | None = None,
    *,
    control_token: str | None = None,
    nls_port: int | None = None,
    nls_host: str = "127.0.0.1",
    nls_config: NlsSimConfig | None = None,
    nls_ssl: ssl.SSLContext | None = None,
) -> Starlette:
    """A fresh simulator with its own faults, request log and audio store.

    ``control_token``: when set, the control API (``/sim/faults``, ``/sim/requests``,
    ``/sim/config``) requires ``Authorization: Bearer <token>``; None leaves it open (loopback use).
    ``nls_port``: also serve Alibaba Cloud NLS (token endpoint and ``/ws/v1``, gateway/sim/nls/) on
    ``nls_host:nls_port`` (0: a free port; ``app.state.nls_port`` tells which; TLS with ``nls_ssl``);
    None: no NLS.
    """
    install_log_filter()
    routes = [
        Route(generation.PATH, generation.text_generation, methods=["POST"]),
        Route(compat.PATH, compat.chat_completions, methods=["POST"]),
        Route(multimodal.PATH, multimodal.multimodal_generation, methods=["POST"]),
        Route(embedding.PATH, embedding.text_embedding, methods=["POST"]),
        Route(rerank.PATH, rerank.text_rerank, methods=["POST"]),
        Route(customization.PATH, customization.customization, methods=["POST"]),
        *(WebSocketRoute(path, inference_ws) for path in INFERENCE_WS_PATHS),
        Route("/sim/health", _health, methods=["GET"]),
        *control_routes,
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={404: _not_found, 405: _bad_method},
        lifespan=_nls_lifespan(nls_host, nls_port, nls_ssl) if nls_port is not None else None,
    )
    app.state.sim = SimState(config or SimConfig())
    app.state.nls = NlsState(nls_config or NlsSimConfig())
    app.state.control_token = control_token or None
    return app


def _nls_lifespan(host: str, port: int, ssl_context: ssl.SSLContext | None) -> Any:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        from gateway.sim.nls.server import NlsServer

        server = NlsServer(app.state.sim, app.state.nls)
        app.state.nls_port = await server.start(host, port, ssl_context)
        try:
            yield
        finally:
            await server.stop()

    return lifespan


def run_simulator(
    host: str = "127.0.0.1",
    port: int = 8100,
    config: SimConfig | None = None,
    control_token: str | None = None,
    nls_port: int | None = None,
) -> None:
    """Serve the simulator until interrupted (``talkgate sim``); NLS on ``nls_port`` unless None.

    ``control_token`` None reads ``TALKGATE_SIM_CONTROL_TOKEN``. Raises ``UnsafeExposure`` before
    binding anything when ``host`` is not loopback and the key list or the control token is missing.
    """
    import uvicorn

    config = config or SimConfig()
    token = control_token if control_token is not None else control_token_from_env()
    check_exposure(host, config, token)
    if nls_port is not None:
        from gateway.sim.nls.state import nls_exposure_problem

        problem = nls_exposure_problem(host)
        if problem:
            raise UnsafeExposure(problem)
    uvicorn.run(
        create_app(config, control_token=token, nls_port=nls_port, nls_host=host),
        host=host,
        port=port,
        log_level="info",
        access_log=False,
        **server_options(),
    )


def server_options() -> dict[str, Any]:
    """uvicorn settings the simulator's protocol handling relies on (tests start servers with them too).

    ``ws_max_size``: see ``ws.WS_MAX_MESSAGE_BYTES``; uvicorn's own default (16 MiB) would cut a
    20 MB frame with a connection reset instead of the simulator's task-failed and close 1009.
    """
    return {"ws_max_size": WS_MAX_MESSAGE_BYTES}
