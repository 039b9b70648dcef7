"""Alibaba Cloud NLS failures -> the one error taxonomy (``providers/base.py``).

Three sources: a ``TaskFailed`` event (``header.status``, reference nls-protocol.md §3.3), a
refused WebSocket handshake (HTTP 403 with ``Meta:ACCESS_DENIED:...``), and CreateToken errors
raised by ``aliyun-python-sdk-core`` (POP ``Code`` such as ``SignatureDoesNotMatch``, §1.6). The
upstream's own words go to the log only (they can echo tokens and hosts); the client gets a
fixed description and the code.
"""

from __future__ import annotations

import logging
from typing import Any

from providers.base import ErrorKind, ProviderError

K = ErrorKind
log = logging.getLogger("talkgate.providers.nls")

#: Every NLS status the docs list, with its kind. Statuses 403xxxxx/400xxxxx that fix nothing on
#: retry are configuration (AUTH: the chain moves on and the breaker counts them) or the request
#: itself (BAD_REQUEST); 5xxxxxxx and the concurrency limit are worth a retry.
STATUS_KINDS: dict[int, ErrorKind] = {
    40000000: K.BAD_REQUEST,  # generic client error
    40000001: K.AUTH,  # token expired / invalid
    40000002: K.BAD_REQUEST,  # message invalid / out of order (our bug or a bad request)
    40000003: K.BAD_REQUEST,  # parameter invalid
    40000004: K.TIMEOUT,  # idle timeout
    40000005: K.RATE_LIMITED,  # too many concurrent tasks
    40000009: K.BAD_REQUEST,  # invalid wav header
    40000010: K.AUTH,  # free trial expired / arrears
    40010001: K.BAD_REQUEST,  # namespace not found
    40010003: K.BAD_REQUEST,  # directive invalid
    40010004: K.RETRYABLE,  # client disconnected before the task finished
    40010005: K.BAD_REQUEST,  # stop while stopping
    40020105: K.AUTH,  # AppKey does not exist
    40020106: K.AUTH,  # AppKey and token from different accounts
    40020503: K.AUTH,  # RAM user lacks nls:CreateToken
    41000002: K.AUTH,  # AppKey missing
    41000003: K.UNAVAILABLE,  # no route for the AppKey
    41010101: K.BAD_REQUEST,  # unsupported sample rate
    41040201: K.RETRYABLE,  # client data not sent continuously
    40270002: K.BAD_REQUEST,  # no valid audio
    40270003: K.BAD_REQUEST,  # audio does not decode
    50000000: K.RETRYABLE,  # server error
    50000001: K.RETRYABLE,  # internal GRPC error
    52010001: K.RETRYABLE,  # internal GRPC error
}
DESCRIPTIONS = {
    K.BAD_REQUEST: "NLS refused the request",
    K.AUTH: "NLS refused our credentials (token, AppKey or AccessKey)",
    K.TIMEOUT: "NLS timed out",
    K.RATE_LIMITED: "NLS is over its concurrency or rate limit",
    K.RETRYABLE: "NLS failed transiently",
    K.UNAVAILABLE: "NLS is unavailable",
}
#: POP (CreateToken) codes -> kinds. Anything else: by HTTP status (see ``token_error``).
POP_CODES: dict[str, ErrorKind] = {
    "SignatureDoesNotMatch": K.AUTH,
    "InvalidAccessKeySecret": K.AUTH,
    "InvalidAccessKeyId.NotFound": K.AUTH,
    "InvalidAccessKeyId.Inactive": K.AUTH,
    "InvalidTimeStamp.Expired": K.AUTH,  # our clock is off: retrying cannot help
    "IllegalTimestamp": K.AUTH,
    "SignatureNonceUsed": K.RETRYABLE,  # a fresh attempt signs a fresh nonce
    "Throttling": K.RATE_LIMITED,
    "Throttling.User": K.RATE_LIMITED,
    "Throttling.Api": K.RATE_LIMITED,
    "ServiceUnavailable": K.RETRYABLE,
    "InternalError": K.RETRYABLE,
}
LOGGED_TEXT_MAX_CHARS = 300


def kind_for_status(status: int) -> ErrorKind:
    if status in STATUS_KINDS:
        return STATUS_KINDS[status]
    if status >= 50000000:
        return K.RETRYABLE
    return K.BAD_REQUEST


def task_failed(header: dict[str, Any]) -> ProviderError:
    """A ``TaskFailed`` event (or any event with a non-success status) as a ProviderError."""
    raw = header.get("status")
    status = raw if isinstance(raw, int) and not isinstance(raw, bool) else 50000000
    kind = kind_for_status(status)
    text = str(header.get("status_text") or "")[:LOGGED_TEXT_MAX_CHARS]
    log.warning("NLS task %s failed: %s %s", str(header.get("task_id"))[:40], status, text)
    return ProviderError(kind, f"{DESCRIPTIONS[kind]} ({status})", code=str(status), provider="nls")


def handshake_error(status: int, body: str = "") -> ProviderError:
    """A refused upgrade: 403 is a bad or expired token (AUTH); 5xx transient; else unavailable."""
    log.warning("NLS refused the WebSocket upgrade: %s %s", status, body[:LOGGED_TEXT_MAX_CHARS])
    if status in (401, 403):
        kind = K.AUTH
    elif status == 429:
        kind = K.RATE_LIMITED
    elif status >= 500:
        kind = K.RETRYABLE
    else:
        kind = K.UNAVAILABLE
    return ProviderError(kind, f"{DESCRIPTIONS[kind]} (handshake {status})", status=status, provider="nls")


def token_error(exc: BaseException) -> ProviderError:
    """An ``aliyunsdkcore`` exception from CreateToken (ServerException / ClientException)."""
    get_code = getattr(exc, "get_error_code", None)
    code = str(get_code()) if callable(get_code) else type(exc).__name__
    get_status = getattr(exc, "get_http_status", None)
    status = get_status() if callable(get_status) else None
    get_message = getattr(exc, "get_error_msg", None)
    message = str(get_message() if callable(get_message) else exc)
    log.warning("NLS CreateToken failed: %s %s %s", status, code, message[:LOGGED_TEXT_MAX_CHARS])
    if code in POP_CODES:
        kind = POP_CODES[code]
    elif code.startswith("Throttling"):
        kind = K.RATE_LIMITED
    elif code == "SDK.HttpError":  # transport: refused, DNS, TLS, timeout
        kind = K.TIMEOUT if "timed out" in message.lower() else K.UNAVAILABLE
    elif isinstance(status, int) and status >= 500:
        kind = K.RETRYABLE
    elif isinstance(status, int) and status == 429:
        kind = K.RATE_LIMITED
    else:  # other 4xx: the token configuration is wrong; the request itself is fine
        kind = K.AUTH
    return ProviderError(kind, f"NLS token fetch failed ({code})", code=code, status=status, provider="nls")
