"""The gateway's failures in DashScope's words, for the front door (reference §6.1).

A DashScope SDK reads ``code``, ``message`` and ``request_id`` and the HTTP status, so every
refusal the OpenAI routes express as an ``APIError`` (auth, scope, limits, quota, bad input) or
a classified ``ProviderError`` (the whole chain failed) is mapped here to the code and status
Bailian itself would use. The message stays talkgate's (it says how to fix the call); the
``retry-after`` of a limit is kept.
"""

from __future__ import annotations

from fastapi.exceptions import RequestValidationError

from gateway.dashscope.errors import DashScopeError
from gateway.errors import APIError, from_provider_error, unknown_model_error
from gateway.inputs.echo import bound_message, echo
from policies.routing import UnknownModelError
from providers.base import ErrorKind, ProviderError

#: What the chain's failure looks like to a DashScope client. The upstream's own credentials
#: failing is the gateway's problem, not the caller's key: an internal error, never 401.
_BY_KIND: dict[ErrorKind, tuple[int, str]] = {
    ErrorKind.BAD_REQUEST: (400, "InvalidParameter"),
    ErrorKind.CONTENT_FILTERED: (400, "DataInspectionFailed"),
    ErrorKind.RATE_LIMITED: (429, "Throttling"),
    ErrorKind.AUTH: (500, "InternalError"),
    ErrorKind.TIMEOUT: (500, "InternalError.Timeout"),
    ErrorKind.RETRYABLE: (500, "InternalError"),
    ErrorKind.UNAVAILABLE: (503, "ModelUnavailable"),
}

#: APIError codes with a more precise Bailian code than their status gives.
_BY_CODE: dict[str, tuple[int, str]] = {
    "rate_limit_exceeded": (429, "Throttling.RateQuota"),
    "insufficient_quota": (429, "Throttling.AllocationQuota"),
    "model_not_found": (404, "ModelNotFound"),
    "no_provider": (503, "ModelUnavailable"),
    "invalid_audio": (400, "BadRequest.UnsupportedFileFormat"),
}

_BY_STATUS: dict[int, tuple[int, str]] = {
    400: (400, "InvalidParameter"),
    401: (401, "InvalidApiKey"),
    403: (403, "AccessDenied"),
    404: (404, "ModelNotFound"),
    408: (408, "RequestTimeOut"),
    413: (413, "BadRequest.TooLarge"),
    415: (415, "BadRequest.UnsupportedFileFormat"),
    422: (400, "InvalidParameter"),
    429: (429, "Throttling"),
    503: (503, "ModelUnavailable"),
    504: (500, "InternalError.Timeout"),
}


def status_of_code(code: str) -> int:
    """The HTTP status Bailian pairs with ``code`` (a WebSocket task-failed has none of its own)."""
    for table in (_BY_CODE.values(), _BY_STATUS.values(), _BY_KIND.values()):
        for status, known in table:
            if known == code:
                return status
    return 400


def validation_message(exc: RequestValidationError, echo_limit: int | None = None) -> str:
    """The first problems of a body that failed validation, each naming its field (echoed short)."""
    parts = []
    for e in exc.errors()[:5]:
        loc = ".".join(echo(str(x), echo_limit) for x in e.get("loc", ()) if x != "body") or "body"
        parts.append(f"{loc}: {echo(str(e.get('msg', 'invalid')), echo_limit)}")
    return bound_message("Invalid request: " + "; ".join(parts))


def from_api_error(err: APIError) -> tuple[DashScopeError, dict[str, str]]:
    """The DashScope form of an OpenAI-route refusal, with the headers to keep (retry-after)."""
    status, code = _BY_CODE.get(err.code or "") or _BY_STATUS.get(err.status) or (500, "InternalError")
    headers = {k: v for k, v in err.headers.items() if k.lower() in ("retry-after",)}
    return DashScopeError(status, code, err.message), headers


def from_exception(
    exc: BaseException, echo_limit: int | None = None
) -> tuple[DashScopeError, dict[str, str]]:
    """Any failure before the answer started, in DashScope's terms (an unknown one: 500)."""
    if isinstance(exc, DashScopeError):
        return exc, {}
    if isinstance(exc, ProviderError):
        status, code = _BY_KIND[exc.kind]
        err = from_provider_error(exc)
        headers = {k: v for k, v in err.headers.items() if k.lower() == "retry-after"}
        return DashScopeError(status, code, err.message), headers
    if isinstance(exc, UnknownModelError):
        return from_api_error(unknown_model_error(exc, echo_limit))
    if isinstance(exc, RequestValidationError):
        return DashScopeError(400, "InvalidParameter", validation_message(exc, echo_limit)), {}
    if isinstance(exc, APIError):
        return from_api_error(exc)
    return DashScopeError(500, "InternalError", "Internal error in the gateway."), {}


def mid_stream(exc: BaseException) -> DashScopeError:
    """The ``event:error`` of a stream that failed after its first event."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, ProviderError):
        exc = cause
    err, _ = from_exception(exc)
    if isinstance(exc, ProviderError):
        err.message = f"The upstream stream was interrupted: {err.message}"
    return err
