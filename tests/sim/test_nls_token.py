"""The simulated POP CreateToken endpoint, driven by the real aliyun-python-sdk-core.

Signature vectors are the reference's (nls-protocol.md §1.4), computed there by the SDK itself;
the signing here is the reference's own formula, written independently of gateway/sim/nls.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from gateway.sim.nls.pop_token import sign, string_to_sign
from tests.conftest import SimHandle
from tests.nls_support import NLS_AK, NLS_SECRET, reset_nls

DIRECT = {"http": None, "https": None}  # aliyunsdkcore ignores NO_PROXY: force a direct connection


@pytest.fixture
def nls_sim(sim: SimHandle) -> Iterator[SimHandle]:
    reset_nls(sim)
    yield sim
    reset_nls(sim)


def acs_request(port: int) -> Any:
    from aliyunsdkcore.request import CommonRequest

    request = CommonRequest()
    request.set_method("POST")
    request.set_domain(f"127.0.0.1:{port}")
    request.set_version("2019-02-28")
    request.set_action_name("CreateToken")
    return request


def acs_client(secret: str = NLS_SECRET, ak: str = NLS_AK) -> Any:
    from aliyunsdkcore.client import AcsClient

    return AcsClient(ak, secret, "cn-shanghai", proxy=DIRECT)


def reference_signature(method: str, params: dict[str, str], secret: str) -> str:
    pe = lambda s: urllib.parse.quote(str(s), safe="-_.~")  # noqa: E731 - the reference's formula
    cq = "&".join(f"{pe(k)}={pe(v)}" for k, v in sorted(params.items()) if k != "Signature")
    sts = f"{method}&{pe('/')}&{pe(cq)}"
    return base64.b64encode(hmac.new((secret + "&").encode(), sts.encode(), hashlib.sha1).digest()).decode()


VECTOR_PARAMS = {
    "AccessKeyId": "testid",
    "Action": "CreateToken",
    "Format": "JSON",
    "RegionId": "cn-shanghai",
    "SignatureMethod": "HMAC-SHA1",
    "SignatureNonce": "0123456789abcdef0123456789abcdef",
    "SignatureVersion": "1.0",
    "Timestamp": "2024-01-01T00:00:00Z",
    "Version": "2019-02-28",
}


@pytest.mark.parametrize(
    ("method", "with_type", "expected"),
    [
        ("POST", True, "qXTB/2TJSM2uaJ4dpTTd50opIz4="),
        ("POST", False, "r0YJ5e7qjEV1ZpCsEw8NLFVNbGA="),
        ("GET", False, "k8EpTyfhA8rScS5+WIxxK4VrvfM="),
    ],
)
def test_signature_matches_the_reference_vectors(method: str, with_type: bool, expected: str) -> None:
    params = dict(VECTOR_PARAMS, **({"SignatureType": ""} if with_type else {}))
    assert sign("testsecret", string_to_sign(method, params)) == expected


def test_the_sdk_gets_a_token_that_opens_the_gateway(nls_sim: SimHandle) -> None:
    before = time.time()
    body = json.loads(acs_client().do_action_with_exception(acs_request(nls_sim.nls_port)))
    token = body["Token"]
    assert len(token["Id"]) == 32 and int(token["Id"], 16) >= 0
    assert before + 35 * 3600 < token["ExpireTime"] < time.time() + 37 * 3600  # Unix seconds
    assert body["ErrMsg"] == "" and body["RequestId"] and body["NlsRequestId"]
    assert nls_sim.nls.token_problem(token["Id"]) is None
    [logged] = nls_sim.requests("nls-token")
    assert logged["status"] == 200 and "Signature" not in logged["body"]


def test_wrong_secret_is_signature_does_not_match(nls_sim: SimHandle) -> None:
    from aliyunsdkcore.acs_exception.exceptions import ServerException

    with pytest.raises(ServerException) as caught:
        acs_client(secret="not-the-secret").do_action_with_exception(acs_request(nls_sim.nls_port))
    assert caught.value.get_http_status() == 400
    assert caught.value.get_error_code() == "SignatureDoesNotMatch"
    # the wording the SDK splits on ':' (it crashes without the colon)
    assert "server string to sign is:POST&%2F&AccessKeyId%3D" in caught.value.get_error_msg()
    assert nls_sim.nls.created == 0


def test_old_timestamp_is_invalid_timestamp_expired(
    nls_sim: SimHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aliyunsdkcore.acs_exception.exceptions import ServerException
    from aliyunsdkcore.utils import parameter_helper

    old = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 16 * 60))
    monkeypatch.setattr(parameter_helper, "get_iso_8061_date", lambda: old)
    with pytest.raises(ServerException) as caught:
        acs_client().do_action_with_exception(acs_request(nls_sim.nls_port))
    assert caught.value.get_http_status() == 400
    assert caught.value.get_error_code() == "InvalidTimeStamp.Expired"
    # 14 minutes of skew is still inside the window
    recent = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 14 * 60))
    monkeypatch.setattr(parameter_helper, "get_iso_8061_date", lambda: recent)
    assert json.loads(acs_client().do_action_with_exception(acs_request(nls_sim.nls_port)))["Token"]["Id"]


def test_unknown_access_key_is_404(nls_sim: SimHandle) -> None:
    from aliyunsdkcore.acs_exception.exceptions import ServerException

    with pytest.raises(ServerException) as caught:
        acs_client(ak="LTAI-nobody").do_action_with_exception(acs_request(nls_sim.nls_port))
    assert (caught.value.get_http_status(), caught.value.get_error_code()) == (
        404,
        "InvalidAccessKeyId.NotFound",
    )


def signed_params(nonce: str) -> dict[str, str]:
    params = dict(
        VECTOR_PARAMS,
        AccessKeyId=NLS_AK,
        SignatureNonce=nonce,
        Timestamp=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    params["Signature"] = reference_signature("GET", params, NLS_SECRET)
    return params


def test_a_replayed_nonce_is_refused_and_the_error_body_is_pops(nls_sim: SimHandle) -> None:
    url = f"http://127.0.0.1:{nls_sim.nls_port}/pop/2019-02-28/tokens"
    params = signed_params("0f" * 16)
    first = httpx.get(url, params=params)
    assert first.status_code == 200 and first.json()["Token"]["Id"]
    again = httpx.get(url, params=params)
    assert again.status_code == 400
    body = again.json()
    assert set(body) == {"RequestId", "HostId", "Code", "Message", "Recommend"}
    assert body["Code"] == "SignatureNonceUsed"


def test_form_body_parameters_are_signed_and_accepted(nls_sim: SimHandle) -> None:
    params = dict(signed_params("ab" * 16))
    params["Signature"] = reference_signature("POST", params, NLS_SECRET)
    r = httpx.post(f"http://127.0.0.1:{nls_sim.nls_port}/", data=params)
    assert r.status_code == 200, r.text
    missing = {k: v for k, v in params.items() if k != "Timestamp"}
    r = httpx.post(f"http://127.0.0.1:{nls_sim.nls_port}/", data=missing)
    assert (r.status_code, r.json()["Code"]) == (400, "IllegalTimestamp")


def test_injected_throttling_reaches_the_sdk(nls_sim: SimHandle) -> None:
    from aliyunsdkcore.acs_exception.exceptions import ServerException

    nls_sim.fault(service="nls-token", status=429, times=1)
    with pytest.raises(ServerException) as caught:
        acs_client().do_action_with_exception(acs_request(nls_sim.nls_port))
    assert (caught.value.get_http_status(), caught.value.get_error_code()) == (429, "Throttling.User")
    assert json.loads(acs_client().do_action_with_exception(acs_request(nls_sim.nls_port)))["Token"]["Id"]
