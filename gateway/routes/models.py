"""``GET /v1/models``: every name a client may send, per capability, in OpenAI's list shape.

One entry per name; a name served by several capabilities (``default``) lists each of them
under ``capabilities`` with its fallback chain. ``owned_by`` is the backend family of the
first target ("bailian" or "local"), ``available`` whether that backend is configured here.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from gateway.auth import ANY_SCOPE, require_scope
from gateway.errors import APIError, echo_limit
from gateway.inputs.echo import echo, echo_list
from gateway.services import Services
from gateway.structured.capabilities import chat_features
from policies.routing import UnknownModelError
from providers.base import CAPABILITIES

#: The capabilities a client names a model for: chat, ASR and TTS, and /v1/embeddings (rerank
#: models are used by the knowledge base only, never asked for by name).
LISTED = (*CAPABILITIES, "embedding")
# Any valid API key may list models (when auth is on); see gateway/auth.py.
router = APIRouter(dependencies=[require_scope(ANY_SCOPE)])

#: Model entries need a ``created`` time; the gateway's start is the honest one.
_CREATED = int(time.time())


def model_catalog(services: Services) -> dict[str, dict[str, Any]]:
    """Name → OpenAI model object with talkgate's routing details."""
    catalog: dict[str, dict[str, Any]] = {}
    route_cfg = services.settings.routes
    for capability in LISTED:
        if capability not in route_cfg:
            continue
        aliases = route_cfg[capability].aliases
        for name in services.router.models(capability):
            try:
                chain = services.router.resolve(capability, name)
            except (UnknownModelError, ValueError):
                continue  # a misconfigured name is not routable, so not listed
            entry = catalog.get(name)
            if entry is None:
                first = chain[0]
                entry = catalog[name] = {
                    "id": name,
                    "object": "model",
                    "created": _CREATED,
                    "owned_by": first.provider,
                    "available": services.registry.get(capability, first.provider) is not None,
                    "capabilities": [],
                    "routes": {},
                }
            entry["capabilities"].append(capability)
            if capability == "chat":  # what the first target of the chain takes (tools, JSON, images)
                entry["features"] = chat_features(chain[0])
            entry["routes"][capability] = {
                "alias_of": aliases.get(name),
                "chain": [str(t) for t in chain],
            }
    return catalog


@router.get("/v1/models")
async def list_models(request: Request) -> Response:
    catalog = model_catalog(request.app.state.services)
    return Response(
        orjson.dumps({"object": "list", "data": list(catalog.values())}), media_type="application/json"
    )


@router.get("/v1/models/{model_id:path}")
async def retrieve_model(model_id: str, request: Request) -> Response:
    catalog = model_catalog(request.app.state.services)
    entry = catalog.get(model_id)
    if entry is None:
        limit = echo_limit(request)
        raise APIError(
            404,
            f"The model '{echo(model_id, limit)}' does not exist. "
            f"Available: {echo_list(list(catalog), limit) or 'none'}",
            type="invalid_request_error",
            code="model_not_found",
            param="model",
        )
    return Response(orjson.dumps(entry), media_type="application/json")
