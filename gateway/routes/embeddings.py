"""``POST /v1/embeddings``: OpenAI's embeddings endpoint over routes.embedding.

A vector is only useful next to vectors of the same model, so this route never falls back to
another model: a request for ``text-embedding-v4`` is answered by that model (through its
retries and breaker) or fails, and the local ``e5-small`` answers when it is asked for, by name
or by the ``local`` alias, which works with no network. The answer's ``model`` is the model that
made the vectors. ``dimensions`` is passed to models that offer several sizes; e5 has one (384)
and any other value is refused with 400. ``encoding_format`` ``base64`` (what the openai SDK asks
for) is little-endian float32, as OpenAI sends it. Token-array input is refused: the gateway has
no tokenizer of the client's model to turn ids back into text.

Extension: ``text_type`` ``"query"`` or ``"document"`` (default), for asymmetric models (e5's
``query:``/``passage:`` roles, DashScope's parameter of the same name).
"""

from __future__ import annotations

import base64
from typing import Any, Literal

import numpy as np
import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from gateway.auth import Principal, require_scope
from gateway.context import get_context
from gateway.errors import APIError, no_provider_error, refuse_unknown_model
from gateway.schemas import IDENTIFIER_MAX_CHARS, parse_json_body, read_body, validate
from gateway.services import Services
from gateway.usage import record
from policies.routing import UnknownModelError
from policies.targets import Target
from providers.base import EmbedRequest, ProviderError

router = APIRouter()

#: Inputs per request (OpenAI's own limit).
MAX_INPUTS = 2048


class EmbeddingsRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=IDENTIFIER_MAX_CHARS)
    input: Any
    dimensions: int | None = Field(default=None, ge=1, le=8192)
    encoding_format: Literal["float", "base64"] = "float"
    user: str | None = Field(default=None, max_length=IDENTIFIER_MAX_CHARS)
    text_type: Literal["query", "document"] = "document"


def input_texts(value: Any) -> list[str]:
    """The request's ``input`` as a list of non-empty strings, or a 400 saying what is wrong."""
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not texts:
        raise APIError(
            400, "input must be a non-empty string or a non-empty array of strings.", param="input"
        )
    if any(isinstance(t, int | list) for t in texts):
        raise APIError(
            400,
            "input as token ids is not supported here: send the text itself.",
            param="input",
            code="unsupported_input",
        )
    if not all(isinstance(t, str) for t in texts):
        raise APIError(400, "input must be a string or an array of strings.", param="input")
    if len(texts) > MAX_INPUTS:
        raise APIError(400, f"input has {len(texts)} items; at most {MAX_INPUTS} per request.", param="input")
    empty = next((i for i, t in enumerate(texts) if not t.strip()), None)
    if empty is not None:
        raise APIError(400, f"input[{empty}] is empty: there is no text to embed.", param="input")
    return texts


def _check_dimensions(services: Services, first: Target, dimensions: int | None) -> None:
    """400 before any work when the asked model makes one size only and it is not ``dimensions``."""
    provider = services.registry.get("embedding", first.provider)
    fixed = getattr(provider, "fixed_dimension", None) if provider is not None else None
    size = fixed(first.model) if fixed is not None else None
    if dimensions is not None and size is not None and size != dimensions:
        raise APIError(400, _size_message(first.model, size, dimensions), param="dimensions")


def _size_message(model: str, size: int, dimensions: int) -> str:
    return (
        f"The model '{model}' makes {size}-dimensional vectors only; dimensions={dimensions} is not "
        f"supported (leave it out, or set it to {size})."
    )


def _encode(vector: list[float], fmt: str) -> list[float] | str:
    if fmt == "base64":
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return vector


@router.post("/v1/embeddings")
async def embeddings(request: Request, principal: Principal = require_scope("knowledge:read")) -> Response:
    try:
        return await _embeddings(request)
    except UnknownModelError as exc:
        raise refuse_unknown_model(request, exc) from None


async def _embeddings(request: Request) -> Response:
    services: Services = request.app.state.services
    body: EmbeddingsRequest = validate(
        EmbeddingsRequest, parse_json_body(await read_body(request, services.settings.max_upload_bytes))
    )
    texts = input_texts(body.input)
    ctx = get_context(request)
    ctx.model = body.model
    first = services.router.resolve("embedding", body.model)[0]  # UnknownModelError: 404
    _check_dimensions(services, first, body.dimensions)

    def other_model(target: Target) -> str | None:
        return None if target.model == first.model else f"not {first.model} (no fallback across models)"

    embed = EmbedRequest(body.model, texts, body.text_type, body.dimensions)
    try:
        result = await services.router.embed(embed, ctx, skip=other_model)
    except ProviderError as exc:
        raise no_provider_error(services, "embedding", exc) from None
    record(request, tokens_in=result.tokens)
    made = len(result.vectors[0]) if result.vectors else 0
    if body.dimensions is not None and made != body.dimensions:  # a model whose size was not known
        raise APIError(400, _size_message(first.model, made, body.dimensions), param="dimensions")
    data = [
        {"object": "embedding", "index": i, "embedding": _encode(v, body.encoding_format)}
        for i, v in enumerate(result.vectors)
    ]
    answer = {
        "object": "list",
        "data": data,
        "model": first.model,
        "usage": {"prompt_tokens": result.tokens, "total_tokens": result.tokens},
    }
    return Response(orjson.dumps(answer), media_type="application/json")
