"""The one data-URL decoder: what it accepts, and the reason it gives for what it refuses."""

import base64

import pytest

from gateway.inputs.data_url import DataUrlError, decode_data_url

PAYLOAD = bytes(range(256)) * 3


def _url(mime: str = "image/png", payload: bytes = PAYLOAD) -> str:
    return f"data:{mime};base64,{base64.b64encode(payload).decode()}"


def test_decodes_bytes_and_mime():
    url = decode_data_url(_url("Image/PNG"))
    assert url.data == PAYLOAD
    assert url.mime == "image/png"
    assert url.subtype == "png"


def test_a_mime_with_parameters_keeps_only_the_type():
    url = decode_data_url(f"data:audio/wav;rate=16000;base64,{base64.b64encode(b'RIFF').decode()}")
    assert (url.data, url.mime) == (b"RIFF", "audio/wav")


def test_bare_base64_only_when_allowed():
    bare = base64.b64encode(PAYLOAD).decode()
    assert decode_data_url(bare, allow_bare=True).data == PAYLOAD
    assert decode_data_url(bare, allow_bare=True).subtype is None
    with pytest.raises(DataUrlError) as caught:
        decode_data_url(bare)
    assert caught.value.reason == "not_data_url"


@pytest.mark.parametrize(
    ("ref", "reason"),
    [
        ("data:image/png,plain-text", "not_base64_url"),
        ("data:image/png;base64", "not_base64_url"),
        ("data:image/png;base64,@@@@", "bad_base64"),
        ("data:image/png;base64,abc", "bad_base64"),  # bad padding
    ],
)
def test_refusals_carry_their_reason(ref, reason):
    with pytest.raises(DataUrlError) as caught:
        decode_data_url(ref)
    assert caught.value.reason == reason


def test_the_size_cap_is_checked_before_decoding():
    ref = _url(payload=b"x" * 3000)
    assert decode_data_url(ref, max_chars=len(ref)).data == b"x" * 3000
    with pytest.raises(DataUrlError) as caught:
        decode_data_url(ref + "", max_chars=len(ref) - 1)
    assert caught.value.reason == "too_large"
