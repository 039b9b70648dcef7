"""Every NLS status and CreateToken failure lands in one ErrorKind (providers/cloud/nls_errors.py)."""

from __future__ import annotations

import pytest

from providers.base import FAILOVER_KINDS, RETRYABLE_KINDS, ErrorKind
from providers.cloud.nls_errors import (
    STATUS_KINDS,
    handshake_error,
    kind_for_status,
    task_failed,
    token_error,
)

#: The status table of the reference (nls-protocol.md §3.3) and the retry advice of §9.
DOCUMENTED = (
    40000000, 40000001, 40000002, 40000003, 40000004, 40000005, 40000009, 40000010, 40010001,
    40010003, 40010004, 40010005, 40020105, 40020106, 41000002, 41000003, 41010101, 41040201,
    40270002, 40270003, 50000000, 50000001, 52010001,
)  # fmt: skip
RETRY_ADVISED = (50000000, 50000001, 52010001, 40000005)
FIX_CONFIGURATION = (40000001, 40020105, 40020106, 41010101, 40270003)


def test_every_documented_status_has_a_kind() -> None:
    assert set(DOCUMENTED) <= set(STATUS_KINDS)
    for status in RETRY_ADVISED:
        assert kind_for_status(status) in RETRYABLE_KINDS, status
    for status in FIX_CONFIGURATION:
        assert kind_for_status(status) not in RETRYABLE_KINDS, status
    assert kind_for_status(40000001) is ErrorKind.AUTH and ErrorKind.AUTH in FAILOVER_KINDS
    assert kind_for_status(59999999) is ErrorKind.RETRYABLE  # an undocumented server error
    assert kind_for_status(40999999) is ErrorKind.BAD_REQUEST


def test_task_failed_keeps_the_code_not_the_text() -> None:
    header = {
        "status": 40000005,
        "status_text": "Gateway:TOO_MANY_REQUESTS:Too many requests!",
        "task_id": "t",
    }
    error = task_failed(header)
    assert (error.kind, error.code, error.provider) == (ErrorKind.RATE_LIMITED, "40000005", "nls")
    assert "Gateway:" not in error.message
    assert handshake_error(403, "Meta:ACCESS_DENIED:The token 'abc' is invalid!.").kind is ErrorKind.AUTH
    assert "abc" not in handshake_error(403, "Meta:ACCESS_DENIED:The token 'abc' is invalid!.").message


class FakeServerError(Exception):
    def __init__(self, code: str, status: int | None, message: str = "m") -> None:
        super().__init__(message)
        self.code, self.status, self.message = code, status, message

    def get_error_code(self) -> str:
        return self.code

    def get_http_status(self) -> int | None:
        return self.status

    def get_error_msg(self) -> str:
        return self.message


@pytest.mark.parametrize(
    ("code", "status", "kind"),
    [
        ("SignatureDoesNotMatch", 400, ErrorKind.AUTH),
        ("InvalidAccessKeySecret", 400, ErrorKind.AUTH),
        ("InvalidAccessKeyId.NotFound", 404, ErrorKind.AUTH),
        ("InvalidTimeStamp.Expired", 400, ErrorKind.AUTH),
        ("Throttling.User", 400, ErrorKind.RATE_LIMITED),
        ("ServiceUnavailable", 503, ErrorKind.RETRYABLE),
        ("SDK.UnknownServerError", 502, ErrorKind.RETRYABLE),
        ("SDK.HttpError", None, ErrorKind.UNAVAILABLE),
        ("Forbidden.RAM", 403, ErrorKind.AUTH),
    ],
)
def test_create_token_failures(code: str, status: int | None, kind: ErrorKind) -> None:
    error = token_error(FakeServerError(code, status))
    assert (error.kind, error.code) == (kind, code)


def test_a_transport_timeout_is_a_timeout() -> None:
    error = token_error(FakeServerError("SDK.HttpError", None, "Read timed out. (read timeout=10)"))
    assert error.kind is ErrorKind.TIMEOUT
