"""OpenAI-shaped error bodies, and the mapping from the provider taxonomy to HTTP.

Error bodies never reflect a client value whole: values quoted in a message go through
``gateway.inputs.echo.echo`` (cut to ``settings.limits.echo_max_chars``), and every body's
message, param and code are bounded in ``APIError.body`` whoever composed them, so a 1 MB field
cannot come back as a 1 MB error. Upstream (Bailian) failures arrive already reworded by
``providers.cloud.errors`` (our wording and a sanitised code, never the upstream's text).
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import HTTPConnection
from starlette.responses import Response

from gateway.inputs.echo import DEFAULT_ECHO_MAX_CHARS, bound_message, echo, echo_list
from policies.routing import UnknownModelError
from providers.base import ErrorKind, ProviderError


class APIError(Exception):
    """An error the client should see, with OpenAI's ``{"error": {...}}`` body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The wire form; message, param and code are bounded here, whoever built the error."""
        param = None if self.param is None else bound_message(self.param, 256)
        code = None if self.code is None else bound_message(self.code, 64)
        return {
            "error": {"message": bound_message(self.message), "type": self.type, "param": param, "code": code}
        }


def echo_limit(request: HTTPConnection | None) -> int:
    """``settings.limits.echo_max_chars`` of the app serving ``request`` (128 without one)."""
    settings = getattr(getattr(request, "app", None), "state", None)
    limits = getattr(getattr(settings, "settings", None), "limits", None)
    return int(getattr(limits, "echo_max_chars", DEFAULT_ECHO_MAX_CHARS))


def error_response(err: APIError) -> Response:
    return Response(
        orjson.dumps(err.body()), status_code=err.status, media_type="application/json", headers=err.headers
    )


_KIND_TO_HTTP: dict[ErrorKind, tuple[int, str]] = {
    ErrorKind.BAD_REQUEST: (400, "invalid_request_error"),
    ErrorKind.CONTENT_FILTERED: (400, "content_filter"),
    ErrorKind.RATE_LIMITED: (429, "rate_limit_error"),
    ErrorKind.AUTH: (502, "upstream_auth_error"),
    ErrorKind.TIMEOUT: (504, "timeout_error"),
    ErrorKind.RETRYABLE: (502, "upstream_error"),
    ErrorKind.UNAVAILABLE: (503, "service_unavailable"),
}


def from_provider_error(exc: ProviderError) -> APIError:
    """Translate a classified backend failure into what the client sees."""
    status, type_ = _KIND_TO_HTTP[exc.kind]
    headers = {}
    if exc.kind is ErrorKind.RATE_LIMITED and exc.retry_after:
        headers["retry-after"] = str(max(1, round(exc.retry_after)))
    where = f" ({exc.provider})" if exc.provider else ""
    code = "content_filter" if exc.kind is ErrorKind.CONTENT_FILTERED else (exc.code or exc.kind.value)
    return APIError(status, f"{exc.message}{where}", type=type_, code=code, headers=headers)


def unknown_model_error(exc: UnknownModelError, limit: int | None = None) -> APIError:
    """OpenAI answers an unknown model with 404 ``model_not_found``; we also list what is served
    (the first names of the list: ``GET /v1/models`` has them all). The name asked for is
    quoted cut to ``limit`` characters."""
    return APIError(
        404,
        f"The model '{echo(exc.model, limit)}' does not exist for {exc.capability}. "
        f"Available: {echo_list(list(exc.available), limit) or 'none'}",
        code="model_not_found",
        param="model",
    )


def refuse_unknown_model(request: HTTPConnection, exc: UnknownModelError) -> APIError:
    """The 404 for a route whose request named a model nobody serves, with the usage row's
    model booked as ``UNKNOWN_MODEL`` instead of the client's string: any string is accepted
    as a name, so booking it would let a tenant write arbitrary text (formulas, line breaks)
    into usage exports. Raising an APIError (not the UnknownModelError) also books the row
    with status 404."""
    from gateway.usage import UNKNOWN_MODEL, record  # usage pulls in the database models

    record(request, model=UNKNOWN_MODEL)
    return unknown_model_error(exc, echo_limit(request))


def no_provider_error(services: Any, capability: str, exc: ProviderError) -> ProviderError | APIError:
    """Explain an UNAVAILABLE failure caused by configuration rather than an outage.

    When none of the chain's providers is registered (no cloud key, local models not
    installed) the client should learn how to fix the deployment, not see a bare 503.
    """
    if exc.kind is not ErrorKind.UNAVAILABLE:
        return exc
    try:
        chain = services.router.resolve(capability, None)
    except Exception:
        return exc
    if any(services.registry.get(capability, t.provider) is not None for t in chain):
        return exc
    return APIError(
        503,
        f"No provider available for {capability}: set DASHSCOPE_API_KEY to use Alibaba Bailian, "
        "or install the local models (pip install '.[local]' in the talkgate checkout).",
        type="service_unavailable",
        code="no_provider",
    )


#: Type names pydantic puts in an error's location for each branch of a union.
_UNION_BRANCHES = {"str", "int", "float", "bool", "bytes", "dict", "list", "none", "decimal"}


def _is_union_branch(part: Any) -> bool:
    """True for the branch tags of a union (``str``, ``list[str]``, ``function-after[...]``...),
    which name a type, not a field the client sent."""
    return isinstance(part, str) and (part in _UNION_BRANCHES or "[" in part or "-" in part)


#: Distinct problems listed in a validation error (a body with 10,000 bad messages gets the
#: first few and a count, not a 10,000-line message).
MAX_VALIDATION_PARTS = 5


def _validation_message(exc: RequestValidationError, limit: int | None = None) -> tuple[str, str | None]:
    """The message names each problem's field, as in ``Invalid request: model: String should have
    at most 256 characters``. Field names can be client text (an unknown key in a strict body),
    so each is echoed; pydantic's own messages do not quote the input."""
    parts: list[str] = []
    seen: set[str] = set()
    param = None
    for e in exc.errors():
        loc = [
            x
            for x in e.get("loc", ())
            if x not in ("body", "query", "path", "header") and not _is_union_branch(x)
        ]
        where = ".".join(echo(x, limit) for x in loc) or "body"
        names = [x for x in loc if isinstance(x, str)]  # the field, not a list index
        param = param or (echo(names[-1], limit) if names else None)
        part = f"{where}: {echo(e.get('msg', 'invalid'), 2 * (limit or DEFAULT_ECHO_MAX_CHARS))}"
        if part not in seen:
            seen.add(part)
            if len(parts) < MAX_VALIDATION_PARTS:
                parts.append(part)
    more = len(seen) - len(parts)
    tail = f"; and {more} more" if more else ""
    return "Invalid request: " + "; ".join(parts) + tail, param


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> Response:
        return error_response(exc)

    @app.exception_handler(ProviderError)
    async def _provider_error(_: Request, exc: ProviderError) -> Response:
        return error_response(from_provider_error(exc))

    @app.exception_handler(UnknownModelError)
    async def _unknown_model(request: Request, exc: UnknownModelError) -> Response:
        return error_response(unknown_model_error(exc, echo_limit(request)))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        message, param = _validation_message(exc, echo_limit(request))
        status = 400 if any(e.get("type") == "json_invalid" for e in exc.errors()) else 422
        return error_response(APIError(status, message, code="invalid_request", param=param))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> Response:
        type_ = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return error_response(APIError(exc.status_code, str(exc.detail), type=type_))
