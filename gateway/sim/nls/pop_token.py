"""The POP token endpoint of ``nls-meta``: ``CreateToken`` with an RPC (signature v1.0) request.

Answers what ``aliyun-python-sdk-core`` and the other official SDKs send (reference nls-protocol.md
§1): GET or POST on ``/`` or ``/pop/<version>/tokens``, parameters in the query string and/or an
``application/x-www-form-urlencoded`` body, signed with HMAC-SHA1 over *every* parameter that
arrived (the Python SDK also signs an empty ``SignatureType=``). Failures use POP's error body
(``RequestId, HostId, Code, Message, Recommend``) and status; a signature mismatch keeps the
``server string to sign is:<sts>`` wording, because the SDK splits that message on ``:`` and
crashes without it.
"""

from __future__ import annotations

import base64
import calendar
import hashlib
import hmac
import time
import uuid
from typing import Any
from urllib.parse import quote

from aiohttp import web

from gateway.sim.nls.context import NLS_KEY, SIM_KEY, hang
from gateway.sim.nls.state import NlsState
from gateway.sim.state import Fault, SimState

VERSIONS = ("2019-02-28", "2019-07-17")  #: China; international (official PHP SDK)
REQUIRED = (
    "AccessKeyId",
    "Action",
    "Version",
    "Format",
    "RegionId",
    "SignatureMethod",
    "SignatureVersion",
    "SignatureNonce",
    "Signature",
)
#: Fault statuses -> POP's code and message (429 is CreateToken's throttling answer, §1.6).
FAULT_CODES = {
    400: ("InvalidParameter", "The specified parameter is not valid."),
    403: ("Forbidden.RAM", "User not authorized to operate on the specified resource."),
    429: ("Throttling.User", "Request was denied due to user flow control."),
    500: ("InternalError", "The request processing has failed due to some unknown error."),
    503: ("ServiceUnavailable", "The request has failed due to a temporary failure of the server."),
}
MAX_ECHO_CHARS = 64  #: client values echoed in messages are cut to this


def percent_encode(value: str) -> str:
    """RFC 3986 encoding as POP signs it: only ``A-Z a-z 0-9 - _ . ~`` stay as they are."""
    return quote(value, safe="-_.~")


def string_to_sign(method: str, params: dict[str, str]) -> str:
    canonical = "&".join(
        f"{percent_encode(k)}={percent_encode(v)}" for k, v in sorted(params.items()) if k != "Signature"
    )
    return f"{method.upper()}&{percent_encode('/')}&{percent_encode(canonical)}"


def sign(secret: str, text: str) -> str:
    digest = hmac.new(f"{secret}&".encode(), text.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def parse_timestamp(value: str) -> float | None:
    """``YYYY-MM-DDThh:mm:ssZ`` (UTC) -> Unix seconds, or None if it is not that shape."""
    try:
        return float(calendar.timegm(time.strptime(value, "%Y-%m-%dT%H:%M:%SZ")))
    except (ValueError, OverflowError):
        return None


def _error(request: web.Request, status: int, code: str, message: str, request_id: str) -> web.Response:
    body = {
        "RequestId": request_id,
        "HostId": request.host,
        "Code": code,
        "Message": message,
        "Recommend": f"https://api.aliyun.com/troubleshoot?q={code}&product=nls-cloud-meta&requestId={request_id}",
    }
    return web.json_response(body, status=status, content_type="application/json")


def _echo(value: str) -> str:
    return value if len(value) <= MAX_ECHO_CHARS else value[:MAX_ECHO_CHARS] + "..."


def check(method: str, params: dict[str, str], nls: NlsState, now: float) -> tuple[int, str, str] | None:
    """(status, Code, Message) of the first problem with a CreateToken request, None if it is valid."""
    if "Timestamp" not in params:
        return (
            400,
            "IllegalTimestamp",
            'The input parameter "Timestamp" that is mandatory for processing this request is not supplied.',
        )
    for name in REQUIRED:
        if not params.get(name):
            return (
                400,
                "MissingParameter",
                f'The input parameter "{name}" that is mandatory for processing this request is not supplied.',
            )
    if params["Action"] != "CreateToken":
        return 404, "InvalidAction.NotFound", "Specified api is not found, please check your url and method."
    if params["Version"] not in VERSIONS:
        return (
            400,
            "InvalidVersion",
            f"Specified parameter Version '{_echo(params['Version'])}' is not valid.",
        )
    if params["SignatureMethod"] != "HMAC-SHA1" or params["SignatureVersion"] != "1.0":
        return 400, "InvalidSignatureMethod", "Specified signature method or version is not supported."
    stamp = parse_timestamp(params["Timestamp"])
    if stamp is None:
        return (
            400,
            "IllegalTimestamp",
            f'Specified parameter "Timestamp" is not valid: {_echo(params["Timestamp"])}.',
        )
    if abs(now - stamp) > nls.config.timestamp_window_s:
        return 400, "InvalidTimeStamp.Expired", "Specified time stamp or date value is expired."
    assert nls.config.access_keys is not None
    secret = nls.config.access_keys.get(params["AccessKeyId"])
    if secret is None:
        return 404, "InvalidAccessKeyId.NotFound", "Specified access key is not found."
    expected_text = string_to_sign(method, params)
    if not hmac.compare_digest(sign(secret, expected_text), params["Signature"]):
        return (
            400,
            "SignatureDoesNotMatch",
            f"Specified signature is not matched with our calculation. server string to sign is:{expected_text}",
        )
    if nls.config.check_nonce and nls.nonce_used(params["SignatureNonce"], now):
        return 400, "SignatureNonceUsed", "Specified signature nonce was used already."
    return None


def fault_answer(fault: Fault) -> tuple[int, str, str]:
    status = fault.status or 500
    code, message = FAULT_CODES.get(status, ("InternalError" if status >= 500 else "InvalidParameter", ""))
    return status, fault.code or code, fault.message or message or f"Simulated error {status}."


async def create_token(request: web.Request) -> web.StreamResponse:
    sim: SimState = request.app[SIM_KEY]
    nls: NlsState = request.app[NLS_KEY]
    params: dict[str, str] = {k: v for k, v in request.query.items()}
    if request.method == "POST" and request.content_type == "application/x-www-form-urlencoded":
        form = await request.post()
        params.update({k: v for k, v in form.items() if isinstance(v, str)})
    request_id = str(uuid.uuid4()).upper()
    logged = {k: v for k, v in params.items() if k != "Signature"}
    item = sim.log.record("nls-token", request.path, None, False, logged)
    problem = check(request.method, params, nls, time.time())
    if problem is None:
        fault = sim.faults.take("nls-token", None)
        if fault is not None:
            item["fault"] = fault.id
            if fault.hang:
                return await hang(request)
            if fault.status is not None:
                problem = fault_answer(fault)
    if problem is not None:
        item["status"] = problem[0]
        return _error(request, *problem, request_id)
    issued = nls.issue(params["AccessKeyId"])
    item["status"] = 200
    body: dict[str, Any] = {
        "RequestId": request_id,
        "NlsRequestId": uuid.uuid4().hex,
        "ErrMsg": "",
        "Token": {"Id": issued.token, "ExpireTime": issued.expire_time, "UserId": "1234567890123456"},
    }
    return web.json_response(body, content_type="application/json")
