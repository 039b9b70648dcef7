"""OpenAI-shaped error bodies, and the mapping from the provider taxonomy to HTTP."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

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
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


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


def unknown_model_error(exc: UnknownModelError) -> APIError:
    """OpenAI answers an unknown model with 404 ``model_not_found``; we also list what is served."""
    return APIError(404, str(exc), code="model_not_found", param="model")


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


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    parts: list[str] = []
    param = None
    for e in exc.errors():
        loc = [
            x
            for x in e.get("loc", ())
            if x not in ("body", "query", "path", "header") and not _is_union_branch(x)
        ]
        where = ".".join(str(x) for x in loc) or "body"
        names = [x for x in loc if isinstance(x, str)]  # the field, not a list index
        param = param or (names[-1] if names else None)
        part = f"{where}: {e.get('msg', 'invalid')}"
        if part not in parts:
            parts.append(part)
    return "Invalid request: " + "; ".join(parts), param


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> Response:
        return error_response(exc)

    @app.exception_handler(ProviderError)
    async def _provider_error(_: Request, exc: ProviderError) -> Response:
        return error_response(from_provider_error(exc))

    @app.exception_handler(UnknownModelError)
    async def _unknown_model(_: Request, exc: UnknownModelError) -> Response:
        return error_response(unknown_model_error(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> Response:
        message, param = _validation_message(exc)
        status = 400 if any(e.get("type") == "json_invalid" for e in exc.errors()) else 422
        return error_response(APIError(status, message, code="invalid_request", param=param))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> Response:
        type_ = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return error_response(APIError(exc.status_code, str(exc.detail), type=type_))
