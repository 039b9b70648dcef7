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

What the message says: the taxonomy's own wording for the kind plus the upstream's code, cut
to identifier characters (``safe_code``), e.g. "the upstream refused the request as invalid
(InvalidParameter)". Never the upstream's text: it is relayed to clients (the gateway's error
bodies and SSE error events, the router's "every target failed (...)" summaries), and it has
carried markup (``<script>``), the request quoted back whole, and details of Bailian's
internals. The text is logged here instead (cut and escaped), where operators look for it.
Transport failures likewise name the exception type, not its text (addresses, OS errors).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import re
import time
from collections.abc import Iterator, Mapping
from typing import Any

import aiohttp

from providers.base import ErrorKind, ProviderError
from providers.cloud import http1

K = ErrorKind
log = logging.getLogger("talkgate.cloud")

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


#: What a client is told for each kind of upstream failure (our words; see the module docstring).
KIND_WORDING: dict[ErrorKind, str] = {
    K.BAD_REQUEST: "the upstream refused the request as invalid",
    K.CONTENT_FILTERED: "the upstream's content safety check rejected the request",
    K.RATE_LIMITED: "the upstream is rate-limiting this account",
    K.AUTH: "the upstream refused the gateway's credentials or account",
    K.TIMEOUT: "the upstream did not answer in time",
    K.RETRYABLE: "the upstream failed to answer",
    K.UNAVAILABLE: "the upstream cannot serve this request",
}

#: Longest upstream code repeated to a client (DashScope's are at most about 30 characters).
CODE_MAX_CHARS = 64
#: Upstream text kept in a log line.
LOGGED_TEXT_MAX_CHARS = 500
_NOT_CODE = re.compile(r"[^A-Za-z0-9._-]+")
#: Kinds whose upstream text is logged at INFO rather than WARNING (see ``_log_upstream``).
_ROUTINE_KINDS = frozenset({K.BAD_REQUEST, K.CONTENT_FILTERED, K.RATE_LIMITED})


def safe_code(code: Any) -> str | None:
    """An upstream error code as we repeat it: letters, digits, ``.``, ``_`` and ``-`` only,
    at most 64 characters; None when nothing is left (``<script>`` becomes ``script``)."""
    if code is None:
        return None
    cleaned = _NOT_CODE.sub("", str(code))[:CODE_MAX_CHARS]
    return cleaned or None


def describe(kind: ErrorKind, code: str | None = None, status: int | None = None) -> str:
    """The client-facing message: our wording for ``kind``, then the code (or HTTP status)."""
    detail = code or (f"HTTP {status}" if status else None)
    return f"{KIND_WORDING[kind]} ({detail})" if detail else KIND_WORDING[kind]


def _log_upstream(kind: ErrorKind, code: str | None, status: int | None, text: str | None) -> None:
    """The upstream's own words, for operators: cut, and repr-escaped so that it cannot forge
    log lines. Failures the request caused (invalid, filtered) and throttling are routine, so
    they are logged one level below the upstream's own failures."""
    if not text:
        return
    level = logging.INFO if kind in _ROUTINE_KINDS else logging.WARNING
    log.log(
        level,
        "DashScope error %s (HTTP %s, %s): %r",
        code or "-",
        status if status is not None else "-",
        kind.value,
        text[:LOGGED_TEXT_MAX_CHARS],
        extra={"error_code": code, "upstream_status": status},
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
        code = safe_code(body.get("code") or None)
        message = body.get("message") or None
    elif isinstance(body, bytes | str):
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        message = text.strip() or None
    kind = kind_for_code(code, status)
    retry_after = parse_retry_after(headers) if kind is K.RATE_LIMITED else None
    _log_upstream(kind, code, status, None if message is None else str(message))
    return ProviderError(
        kind, describe(kind, code, status), code=code, status=status, retry_after=retry_after
    )


def task_failed(header: Mapping[str, Any]) -> ProviderError:
    """A WebSocket ``task-failed`` event header as a ProviderError."""
    code = safe_code(header.get("error_code") or None)
    kind = kind_for_code(code, None)
    message = header.get("error_message")
    _log_upstream(kind, code, None, None if message is None else str(message))
    return ProviderError(kind, describe(kind, code), code=code)


def handshake_error(status: int, message: str = "") -> ProviderError:
    """A refused WebSocket upgrade (401/403 bad key, 429, 503 ...). The reason phrase is the
    upstream's words: logged, not repeated."""
    kind = kind_for_status(status)
    if status == 503:
        kind = K.UNAVAILABLE
    _log_upstream(kind, None, status, message)
    return ProviderError(kind, f"WebSocket handshake refused: {describe(kind, None, status)}", status=status)


def from_exception(exc: BaseException) -> ProviderError:
    """Transport failures: refused → UNAVAILABLE, timeouts → TIMEOUT, dropped → RETRYABLE."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, aiohttp.WSServerHandshakeError):
        return handshake_error(exc.status, exc.message)
    name = type(exc).__name__
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return ProviderError(K.TIMEOUT, f"DashScope did not answer in time ({name})")
    # The exception's text names hosts, addresses and OS errors: for the log, not the client.
    log.warning("DashScope transport failure: %s: %r", name, str(exc)[:LOGGED_TEXT_MAX_CHARS])
    if isinstance(exc, aiohttp.ClientConnectorError | http1.ConnectError):
        return ProviderError(K.UNAVAILABLE, f"cannot connect to DashScope ({name})")
    if isinstance(exc, aiohttp.ClientResponseError):
        kind = kind_for_status(exc.status)
        return ProviderError(kind, describe(kind, None, exc.status), status=exc.status)
    return ProviderError(K.RETRYABLE, f"connection to DashScope failed ({name})")


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """Re-raise transport exceptions (aiohttp, OS, timeouts, bad JSON) as ProviderError."""
    try:
        yield
    except ProviderError:
        raise
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
        raise from_exception(exc) from exc
