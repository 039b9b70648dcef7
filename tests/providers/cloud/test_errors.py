"""The DashScope error table: every code of the protocol reference (§6.1) maps to the intended kind."""

from __future__ import annotations

import email.utils
import logging
import time

import aiohttp
import pytest

from providers.base import ErrorKind as K
from providers.base import ProviderError
from providers.cloud import errors

# (HTTP status, code, expected kind): the whole table of reference §6.1 plus the SDK's extra wire codes.
REFERENCE_TABLE = [
    (400, "InvalidParameter", K.BAD_REQUEST),
    (400, "DataInspectionFailed", K.CONTENT_FILTERED),
    (400, "BadRequest.EmptyInput", K.BAD_REQUEST),
    (400, "BadRequest.EmptyParameters", K.BAD_REQUEST),
    (400, "BadRequest.EmptyModel", K.BAD_REQUEST),
    (400, "InvalidURL", K.BAD_REQUEST),
    (400, "Arrearage", K.AUTH),
    (401, "InvalidApiKey", K.AUTH),
    (403, "AccessDenied", K.AUTH),
    (403, "AccessDenied.Unpurchased", K.AUTH),
    (403, "Model.AccessDenied", K.AUTH),
    (403, "Workspace.AccessDenied", K.AUTH),
    (404, "ModelNotFound", K.UNAVAILABLE),
    (404, "WorkSpaceNotFound", K.AUTH),
    (408, "RequestTimeOut", K.TIMEOUT),
    (413, "BadRequest.TooLarge", K.BAD_REQUEST),
    (415, "BadRequest.InputDownloadFailed", K.BAD_REQUEST),
    (415, "BadRequest.UnsupportedFileFormat", K.BAD_REQUEST),
    (429, "Throttling", K.RATE_LIMITED),
    (429, "Throttling.RateQuota", K.RATE_LIMITED),
    (429, "Throttling.AllocationQuota", K.UNAVAILABLE),
    (429, "LimitRequests", K.RATE_LIMITED),
    (429, "PrepaidBillOverdue", K.AUTH),
    (429, "PostpaidBillOverdue", K.AUTH),
    (429, "CommodityNotPurchased", K.AUTH),
    (500, "InternalError", K.RETRYABLE),
    (500, "InternalError.Algo", K.RETRYABLE),
    (500, "InternalError.Timeout", K.RETRYABLE),
    (500, "SystemError", K.RETRYABLE),
    (503, "ModelUnavailable", K.UNAVAILABLE),
    (404, "Model.NotExist", K.UNAVAILABLE),
    (503, "ServiceUnavailable", K.RETRYABLE),
    (504, "GatewayTimeout", K.RETRYABLE),
]


@pytest.mark.parametrize(("status", "code", "kind"), REFERENCE_TABLE)
def test_every_reference_code_maps(status: int, code: str, kind: K) -> None:
    err = errors.http_error(status, {"code": code, "message": "m", "request_id": "r"})
    assert err.kind is kind
    assert err.code == code
    assert err.status == status
    assert code in err.message


def test_table_has_no_code_missing_from_the_test() -> None:
    tested = {code for _, code, _ in REFERENCE_TABLE} | {"CLIENT_ERROR"}
    assert set(errors.CODE_KINDS) == tested


def test_throttling_is_retryable_but_exhausted_quota_is_not() -> None:
    assert errors.http_error(429, {"code": "Throttling"}).retryable
    quota = errors.http_error(429, {"code": "Throttling.AllocationQuota"})
    assert not quota.retryable
    assert quota.kind is K.UNAVAILABLE


@pytest.mark.parametrize(
    ("code", "status", "kind"),
    [
        ("InternalError.Brand.New", 500, K.RETRYABLE),
        ("Throttling.Burst", 429, K.RATE_LIMITED),
        ("SomethingNew", 400, K.BAD_REQUEST),
        ("SomethingNew", 401, K.AUTH),
        ("SomethingNew", 502, K.RETRYABLE),
        ("Conflict", 409, K.RETRYABLE),
        (None, 404, K.UNAVAILABLE),
        (None, 429, K.RATE_LIMITED),
        (None, None, K.RETRYABLE),
    ],
)
def test_unknown_codes_fall_back_by_prefix_then_status(code: str | None, status: int | None, kind: K) -> None:
    assert errors.kind_for_code(code, status) is kind


def test_non_json_body_text_is_logged_not_relayed(caplog: pytest.LogCaptureFixture) -> None:
    # The upstream's own text goes to the operator's log; the message (relayed to clients)
    # is our wording with the HTTP status.
    with caplog.at_level(logging.WARNING, logger="talkgate.cloud"):
        err = errors.http_error(502, b"<html>bad gateway</html>")
    assert err.kind is K.RETRYABLE
    assert "bad gateway" not in err.message and "<html>" not in err.message
    assert "HTTP 502" in err.message
    assert err.code is None
    assert "bad gateway" in caplog.text


def test_retry_after_headers() -> None:
    assert errors.parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert errors.parse_retry_after({"retry-after": "3"}) == 3.0
    now = time.time()
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert errors.parse_retry_after({"retry-after": date}, now=now) == pytest.approx(30, abs=1.5)
    assert errors.parse_retry_after({"retry-after": "soon"}) is None
    assert errors.parse_retry_after({}) is None


def test_retry_after_only_on_rate_limits() -> None:
    limited = errors.http_error(429, {"code": "Throttling"}, {"retry-after": "2"})
    assert limited.retry_after == 2.0
    failed = errors.http_error(500, {"code": "InternalError"}, {"retry-after": "2"})
    assert failed.retry_after is None


def test_task_failed_codes(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="talkgate.cloud"):
        err = errors.task_failed({"error_code": "InvalidParameter", "error_message": "bad voice"})
    assert err.kind is K.BAD_REQUEST and err.code == "InvalidParameter"
    assert "InvalidParameter" in err.message and "bad voice" not in err.message
    assert "bad voice" in caplog.text
    assert errors.task_failed({"error_code": "CLIENT_ERROR"}).kind is K.TIMEOUT
    assert errors.task_failed({"error_code": "DataInspectionFailed"}).kind is K.CONTENT_FILTERED
    assert errors.task_failed({}).kind is K.RETRYABLE


@pytest.mark.parametrize(
    ("status", "kind"), [(401, K.AUTH), (403, K.AUTH), (429, K.RATE_LIMITED), (503, K.UNAVAILABLE)]
)
def test_handshake_statuses(status: int, kind: K) -> None:
    assert errors.handshake_error(status).kind is kind


def test_transport_exceptions() -> None:
    assert errors.from_exception(TimeoutError()).kind is K.TIMEOUT
    assert errors.from_exception(aiohttp.ServerTimeoutError("read")).kind is K.TIMEOUT
    assert errors.from_exception(aiohttp.ServerDisconnectedError()).kind is K.RETRYABLE
    assert errors.from_exception(aiohttp.ClientPayloadError("cut")).kind is K.RETRYABLE
    refused = aiohttp.ClientConnectorError(
        aiohttp.client_reqrep.ConnectionKey("h", 1, False, True, None, None, None),
        ConnectionRefusedError(111, "no"),
    )
    assert errors.from_exception(refused).kind is K.UNAVAILABLE


def test_translated_leaves_provider_errors_alone() -> None:
    original = ProviderError(K.CONTENT_FILTERED, "x")
    with pytest.raises(ProviderError) as info, errors.translated():
        raise original
    assert info.value is original
    with pytest.raises(ProviderError) as info, errors.translated():
        raise ValueError("not json")
    assert info.value.kind is K.RETRYABLE
