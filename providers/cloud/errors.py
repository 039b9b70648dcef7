"""DashScope failures → the provider error taxonomy (``providers.base.ErrorKind``).

Table-driven: every error code DashScope documents (protocol reference §6) has one row,
so a reviewer can check the policy at a glance. Codes not in the table fall back to the
HTTP status. Decisions that are ours, not Alibaba's:

- ``Throttling.AllocationQuota`` (the account's quota is used up) → UNAVAILABLE, not
  RATE_LIMITED: waiting seconds will not refill a monthly quota, so the router should
  fail over at once instead of retrying the same target.
- ``Arrearage`` and the bill/purchase codes that Bailian sends with HTTP 429
  (``PrepaidBillOverdue``, ``PostpaidBillOverdue``, ``CommodityNotPurchased``) → AUTH: the
  account cannot be used until a human acts; retrying cannot help, failing over can.
- ``ModelNotFound`` / ``Model.NotExist`` → UNAVAILABLE: this upstream cannot serve the
  model (region or account), so another target may; the client's request is not wrong.
- WebSocket ``CLIENT_ERROR`` (the server's 23 s no-audio timeout) → TIMEOUT.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import time
from collections.abc import Iterator, Mapping
from typing import Any

import aiohttp

from providers.base import ErrorKind, ProviderError
from providers.cloud import http1

K = ErrorKind

#: DashScope error code → kind. Keys are matched exactly, then by prefix (see ``kind_for_code``).
CODE_KINDS: dict[str, ErrorKind] = {
    # 400
    "InvalidParameter": K.BAD_REQUEST,
    "DataInspectionFailed": K.CONTENT_FILTERED,
    "BadRequest.EmptyInput": K.BAD_REQUEST,
    "BadRequest.EmptyParameters": K.BAD_REQUEST,
    "BadRequest.EmptyModel": K.BAD_REQUEST,
    "InvalidURL": K.BAD_REQUEST,
    "Arrearage": K.AUTH,
    # 401 / 403
    "InvalidApiKey": K.AUTH,
    "AccessDenied": K.AUTH,
    "AccessDenied.Unpurchased": K.AUTH,
    "Model.AccessDenied": K.AUTH,
    "Workspace.AccessDenied": K.AUTH,
    # 404
    "ModelNotFound": K.UNAVAILABLE,
    "Model.NotExist": K.UNAVAILABLE,
    "WorkSpaceNotFound": K.AUTH,
    # 408 / 413 / 415
    "RequestTimeOut": K.TIMEOUT,
    "BadRequest.TooLarge": K.BAD_REQUEST,
    "BadRequest.InputDownloadFailed": K.BAD_REQUEST,
    "BadRequest.UnsupportedFileFormat": K.BAD_REQUEST,
    # 429
    "Throttling": K.RATE_LIMITED,
    "Throttling.RateQuota": K.RATE_LIMITED,
    "Throttling.AllocationQuota": K.UNAVAILABLE,
    "LimitRequests": K.RATE_LIMITED,
    "PrepaidBillOverdue": K.AUTH,
    "PostpaidBillOverdue": K.AUTH,
    "CommodityNotPurchased": K.AUTH,
    # 500 / 503 / 504
    "InternalError": K.RETRYABLE,
    "InternalError.Algo": K.RETRYABLE,
    "InternalError.Timeout": K.RETRYABLE,
    "SystemError": K.RETRYABLE,
    "ServiceUnavailable": K.RETRYABLE,
    "GatewayTimeout": K.RETRYABLE,
    "ModelUnavailable": K.UNAVAILABLE,
    # WebSocket task-failed codes
    "CLIENT_ERROR": K.TIMEOUT,
}

#: Families: any code starting with one of these prefixes (e.g. a future ``Throttling.X``).
_PREFIX_KINDS: tuple[tuple[str, ErrorKind], ...] = (
    ("InternalError", K.RETRYABLE),
    ("Throttling", K.RATE_LIMITED),
    ("AccessDenied", K.AUTH),
    ("BadRequest", K.BAD_REQUEST),
    ("InvalidParameter", K.BAD_REQUEST),
    ("DataInspection", K.CONTENT_FILTERED),
)


def kind_for_status(status: int | None) -> ErrorKind:
    """Fallback when the code is unknown or absent."""
    if status is None:
        return K.RETRYABLE
    if status in (401, 403):
        return K.AUTH
    if status == 404:  # usually a wrong base URL or path: this upstream cannot serve us
        return K.UNAVAILABLE
    if status == 408:
        return K.TIMEOUT
    if status == 409:  # a conflicting in-flight request; the SDK's v2 transport retries it
        return K.RETRYABLE
    if status == 429:
        return K.RATE_LIMITED
    if 400 <= status < 500:
        return K.BAD_REQUEST
    return K.RETRYABLE  # 5xx, and a 200 carrying an error we do not know


def kind_for_code(code: str | None, status: int | None = None) -> ErrorKind:
    if code:
        kind = CODE_KINDS.get(code)
        if kind is not None:
            return kind
        for prefix, prefix_kind in _PREFIX_KINDS:
            if code.startswith(prefix):
                return prefix_kind
    return kind_for_status(status)


def parse_retry_after(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """Seconds to wait, from ``retry-after-ms`` (preferred) or ``Retry-After`` (seconds or HTTP date)."""
    if not headers:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def http_error(
    status: int | None,
    body: Any,
    headers: Mapping[str, str] | None = None,
) -> ProviderError:
    """A non-200 reply (or a 200 whose body carries ``code``) as a ProviderError."""
    code = message = None
    if isinstance(body, dict):
        code = body.get("code") or None
        message = body.get("message") or None
        if code is not None:
            code = str(code)
    elif isinstance(body, bytes | str):
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        message = text.strip()[:500] or None
    kind = kind_for_code(code, status)
    retry_after = parse_retry_after(headers) if kind is K.RATE_LIMITED else None
    text = message or f"DashScope returned HTTP {status}"
    if code:
        text = f"{code}: {text}"
    return ProviderError(kind, text, code=code, status=status, retry_after=retry_after)


def task_failed(header: Mapping[str, Any]) -> ProviderError:
    """A WebSocket ``task-failed`` event header as a ProviderError."""
    code = header.get("error_code") or None
    message = header.get("error_message") or "task failed"
    kind = kind_for_code(code, None)
    return ProviderError(kind, f"{code}: {message}" if code else message, code=code)


def handshake_error(status: int, message: str = "") -> ProviderError:
    """A refused WebSocket upgrade (401/403 bad key, 429, 503 ...)."""
    kind = kind_for_status(status)
    if status == 503:
        kind = K.UNAVAILABLE
    return ProviderError(kind, f"WebSocket handshake refused: HTTP {status} {message}".strip(), status=status)


def from_exception(exc: BaseException) -> ProviderError:
    """Transport failures: refused → UNAVAILABLE, timeouts → TIMEOUT, dropped → RETRYABLE."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, aiohttp.WSServerHandshakeError):
        return handshake_error(exc.status, exc.message)
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return ProviderError(K.TIMEOUT, f"DashScope did not answer in time ({type(exc).__name__})")
    if isinstance(exc, aiohttp.ClientConnectorError | http1.ConnectError):
        return ProviderError(K.UNAVAILABLE, f"cannot connect to DashScope: {exc}")
    if isinstance(exc, aiohttp.ClientResponseError):
        return ProviderError(kind_for_status(exc.status), f"DashScope HTTP {exc.status}: {exc.message}")
    return ProviderError(K.RETRYABLE, f"connection to DashScope failed: {type(exc).__name__}: {exc}")


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """Re-raise transport exceptions (aiohttp, OS, timeouts, bad JSON) as ProviderError."""
    try:
        yield
    except ProviderError:
        raise
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
        raise from_exception(exc) from exc
