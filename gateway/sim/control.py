"""The simulator's own control API: faults, recorded requests, config; plus the audio files.

No Bailian key applies here. With a control token (``TALKGATE_SIM_CONTROL_TOKEN``) the faults,
requests and config calls need ``Authorization: Bearer <token>``: they expose every recorded
prompt and let the caller break the simulated cloud. Without one they are open, which
``gateway.sim.exposure`` allows only on a loopback bind. ``/sim/audio/{name}`` stays open like the
signed URLs it stands in for (clients fetch it with no credentials); its names are unguessable.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.dashscope.bodies import bearer_key, json_response, read_json
from gateway.sim.state import SimState

Endpoint = Callable[[Request], Awaitable[Response]]


def _state(request: Request) -> SimState:
    return request.app.state.sim


def _bad(message: str, status: int = 400) -> Response:
    return json_response({"error": {"message": message, "type": "invalid_request_error"}}, status)


def _token_ok(request: Request) -> bool:
    token: str | None = getattr(request.app.state, "control_token", None)
    if not token:
        return True
    given = bearer_key(request.headers) or ""
    return hmac.compare_digest(given.encode(), token.encode())


def guarded(endpoint: Endpoint) -> Endpoint:
    """The endpoint, answering 401 first unless the request carries the control token (if one is set)."""

    async def checked(request: Request) -> Response:
        if not _token_ok(request):
            body = {
                "error": {
                    "message": "The simulator's control API needs 'Authorization: Bearer <token>' "
                    "(the TALKGATE_SIM_CONTROL_TOKEN it was started with).",
                    "type": "authentication_error",
                }
            }
            return json_response(body, 401, {"WWW-Authenticate": "Bearer"})
        return await endpoint(request)

    checked.__name__ = checked.__qualname__ = endpoint.__name__
    checked.__doc__ = endpoint.__doc__
    return checked


async def add_fault(request: Request) -> Response:
    spec, reason = await read_json(request)
    if spec is None:
        return _bad(reason or "bad body")
    try:
        fault = _state(request).faults.add(spec)
    except ValueError as exc:
        return _bad(str(exc))
    return json_response(fault.view(), 201)


async def list_faults(request: Request) -> Response:
    return json_response({"faults": _state(request).faults.view()})


async def clear_faults(request: Request) -> Response:
    _state(request).faults.clear()
    return json_response({"faults": []})


async def delete_fault(request: Request) -> Response:
    try:
        fault_id = int(request.path_params["fault_id"])
    except ValueError:
        return _bad("fault id must be an integer")
    if not _state(request).faults.remove(fault_id):
        return _bad(f"no fault {fault_id}", 404)
    return json_response({"deleted": fault_id})


async def list_requests(request: Request) -> Response:
    items = _state(request).log.view()
    service = request.query_params.get("service")
    if service:
        items = [i for i in items if i["service"] == service]
    return json_response({"requests": items})


async def clear_requests(request: Request) -> Response:
    _state(request).log.clear()
    return json_response({"requests": []})


async def get_config(request: Request) -> Response:
    return json_response(_state(request).config.public_view())


async def put_config(request: Request) -> Response:
    patch, reason = await read_json(request)
    if patch is None:
        return _bad(reason or "bad body")
    state = _state(request)
    try:
        state.config.merge(patch)
    except ValueError as exc:
        return _bad(str(exc))
    state.log.resize(state.config.record_limit)
    return json_response(state.config.public_view())


async def reset_config(request: Request) -> Response:
    """Back to the values the simulator started with (the accepted keys never change at run time)."""
    state = _state(request)
    state.config = state.initial_config()
    state.log.resize(state.config.record_limit)
    return json_response(state.config.public_view())


async def get_audio(request: Request) -> Response:
    stored = _state(request).audio.get(request.path_params["name"])
    if stored is None:
        return _bad("audio not found (expired or never created)", 404)
    data, media_type = stored
    return Response(data, media_type=media_type)


routes = [
    Route("/sim/faults", guarded(add_fault), methods=["POST"]),
    Route("/sim/faults", guarded(list_faults), methods=["GET"]),
    Route("/sim/faults", guarded(clear_faults), methods=["DELETE"]),
    Route("/sim/faults/{fault_id}", guarded(delete_fault), methods=["DELETE"]),
    Route("/sim/requests", guarded(list_requests), methods=["GET"]),
    Route("/sim/requests", guarded(clear_requests), methods=["DELETE"]),
    Route("/sim/config", guarded(get_config), methods=["GET"]),
    Route("/sim/config", guarded(put_config), methods=["PUT"]),
    Route("/sim/config", guarded(reset_config), methods=["DELETE"]),
    Route("/sim/audio/{name}", get_audio, methods=["GET"]),
]
