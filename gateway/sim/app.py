"""The Bailian (DashScope) simulator as one ASGI app: HTTP, SSE and WebSocket on a single port.

``create_app`` is used by tests (in-process uvicorn thread) and ``run_simulator`` by
``talkgate sim --port P``. Wire formats follow ``reference/dashscope-protocol.md``, quirks included.
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute

from gateway.dashscope.bodies import INFERENCE_WS_PATHS, json_response, new_request_id
from gateway.sim import compat, generation, multimodal
from gateway.sim.config import SimConfig
from gateway.sim.control import routes as control_routes
from gateway.sim.exposure import check_exposure, control_token_from_env
from gateway.sim.http_common import install_log_filter
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


def create_app(config: SimConfig | None = None, *, control_token: str | None = None) -> Starlette:
    """A fresh simulator with its own faults, request log and audio store.

    ``control_token``: when set, the control API (``/sim/faults``, ``/sim/requests``,
    ``/sim/config``) requires ``Authorization: Bearer <token>``; None leaves it open (loopback use).
    """
    install_log_filter()
    routes = [
        Route(generation.PATH, generation.text_generation, methods=["POST"]),
        Route(compat.PATH, compat.chat_completions, methods=["POST"]),
        Route(multimodal.PATH, multimodal.multimodal_generation, methods=["POST"]),
        *(WebSocketRoute(path, inference_ws) for path in INFERENCE_WS_PATHS),
        Route("/sim/health", _health, methods=["GET"]),
        *control_routes,
    ]
    app = Starlette(routes=routes, exception_handlers={404: _not_found, 405: _bad_method})
    app.state.sim = SimState(config or SimConfig())
    app.state.control_token = control_token or None
    return app


def run_simulator(
    host: str = "127.0.0.1",
    port: int = 8100,
    config: SimConfig | None = None,
    control_token: str | None = None,
) -> None:
    """Serve the simulator until interrupted (``talkgate sim``).

    ``control_token`` None reads ``TALKGATE_SIM_CONTROL_TOKEN``. Raises ``UnsafeExposure`` before
    binding anything when ``host`` is not loopback and the key list or the control token is missing.
    """
    import uvicorn

    config = config or SimConfig()
    token = control_token if control_token is not None else control_token_from_env()
    check_exposure(host, config, token)
    uvicorn.run(
        create_app(config, control_token=token),
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
