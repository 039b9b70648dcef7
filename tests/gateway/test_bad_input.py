"""Bad input on every /v1 route: a clear 4xx with an OpenAI-shaped body, never a 500.

The gateway under test has max_upload_bytes=256 KiB and max_tts_chars=200 (see fake_gateway).
"""

from __future__ import annotations

import io
import socket
import time

import av
import httpx
import pytest

from tests.gateway import fake_providers
from tests.gateway.fake_providers import FakeGateway
from tests.sounds import tone_wav

# shared fixtures (a gateway over scripted providers, and an httpx client for it)
client = fake_providers.client
fake_gateway = fake_providers.fake_gateway

CHAT = "/v1/chat/completions"
USER = [{"role": "user", "content": "hi"}]


def error_of(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"}
    err = body["error"]
    assert {"message", "type", "param", "code"} <= set(err)
    assert err["message"]
    return err


def transcribe(client: httpx.Client, data: bytes, name: str = "a.wav", **fields: str) -> httpx.Response:
    fields.setdefault("model", "whisper-1")
    return client.post("/v1/audio/transcriptions", files={"file": (name, data)}, data=fields)


# --------------------------------------------------------------------------- chat


def test_malformed_json(client: httpx.Client) -> None:
    r = client.post(
        CHAT, content=b'{"model": "default", "messages": [', headers={"content-type": "application/json"}
    )
    err = error_of(r, 400)
    assert "not valid JSON" in err["message"]
    assert err["code"] == "invalid_json"


def test_empty_body(client: httpx.Client) -> None:
    err = error_of(client.post(CHAT, content=b""), 400)
    assert "empty" in err["message"]


def test_body_that_is_not_an_object(client: httpx.Client) -> None:
    err = error_of(client.post(CHAT, json=[1, 2]), 400)
    assert "JSON object" in err["message"]


def test_missing_model_names_the_field(client: httpx.Client) -> None:
    err = error_of(client.post(CHAT, json={"messages": USER}), 422)
    assert "model" in err["message"] and "required" in err["message"]
    assert err["param"] == "model"


def test_missing_messages_names_the_field(client: httpx.Client) -> None:
    err = error_of(client.post(CHAT, json={"model": "default"}), 422)
    assert "messages" in err["message"]


def test_wrong_type_names_the_field(client: httpx.Client) -> None:
    err = error_of(client.post(CHAT, json={"model": "default", "messages": USER, "temperature": "hot"}), 422)
    assert "temperature" in err["message"]


def test_invalid_role(client: httpx.Client) -> None:
    err = error_of(
        client.post(CHAT, json={"model": "default", "messages": [{"role": "robot", "content": "x"}]}), 422
    )
    assert "role" in err["message"]


def test_unknown_model_lists_available(client: httpx.Client) -> None:
    err = error_of(client.post(CHAT, json={"model": "gpt-17", "messages": USER}), 404)
    assert "gpt-17" in err["message"]
    assert "qwen-plus" in err["message"] and "default" in err["message"]
    assert err["code"] == "model_not_found"


def test_empty_messages(client: httpx.Client) -> None:
    err = error_of(client.post(CHAT, json={"model": "default", "messages": []}), 400)
    assert "at least one message" in err["message"]
    assert err["param"] == "messages"


def test_messages_without_text(client: httpx.Client) -> None:
    err = error_of(
        client.post(CHAT, json={"model": "default", "messages": [{"role": "user", "content": "  "}]}), 400
    )
    assert "no text" in err["message"]


def test_image_content_part_is_refused(client: httpx.Client) -> None:
    parts = [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]
    err = error_of(
        client.post(CHAT, json={"model": "default", "messages": [{"role": "user", "content": parts}]}), 400
    )
    assert "image_url" in err["message"]


def test_n_greater_than_one(client: httpx.Client) -> None:
    err = error_of(client.post(CHAT, json={"model": "default", "messages": USER, "n": 2}), 400)
    assert "n must be 1" in err["message"]
    assert err["param"] == "n"
    assert err["code"] == "unsupported_parameter"


def test_max_tokens_above_ceiling(client: httpx.Client) -> None:
    err = error_of(client.post(CHAT, json={"model": "default", "messages": USER, "max_tokens": 10**6}), 400)
    assert "4096" in err["message"]


def test_too_many_stop_sequences(client: httpx.Client) -> None:
    err = error_of(client.post(CHAT, json={"model": "default", "messages": USER, "stop": list("abcde")}), 422)
    assert "stop" in err["message"] and "4" in err["message"]


def test_text_part_without_text_says_so(client: httpx.Client) -> None:
    parts = [{"type": "text"}]
    err = error_of(
        client.post(CHAT, json={"model": "default", "messages": [{"role": "user", "content": parts}]}), 400
    )
    assert "needs a 'text' string" in err["message"]
    assert "not supported" not in err["message"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"stop": [1, 2]}, "stop"),
        ({"messages": [{"role": "user", "content": [1, 2]}]}, "content"),
    ],
)
def test_union_errors_name_the_field_not_a_type(client: httpx.Client, body: dict, field: str) -> None:
    err = error_of(client.post(CHAT, json={"model": "default", "messages": USER, **body}), 422)
    assert err["param"] == field
    assert "list[" not in err["message"] and ".str:" not in err["message"]


@pytest.mark.parametrize("value", ["yes", "true", 1])
def test_stream_must_be_a_real_boolean(client: httpx.Client, value: object) -> None:
    err = error_of(client.post(CHAT, json={"model": "default", "messages": USER, "stream": value}), 422)
    assert err["param"] == "stream" and "boolean" in err["message"]


@pytest.mark.parametrize("stop", ["", [""], ["", ""]])
def test_empty_stop_means_no_stop_sequence(
    client: httpx.Client, fake_gateway: FakeGateway, stop: object
) -> None:
    chat = fake_gateway.provider("chat")
    chat.calls.clear()
    r = client.post(CHAT, json={"model": "default", "messages": USER, "stop": stop})
    assert r.status_code == 200, r.text
    [request] = chat.calls
    assert request.stop == []


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        # tools, tool_choice and response_format are served now (tests/gateway/test_tools.py)
        ({"functions": [{"name": "f", "parameters": {}}]}, "functions"),
        ({"function_call": "auto"}, "function_call"),
        ({"logprobs": True}, "logprobs"),
    ],
)
def test_shape_changing_fields_are_refused(
    client: httpx.Client, fake_gateway: FakeGateway, extra: dict, field: str
) -> None:
    chat = fake_gateway.provider("chat")
    chat.calls.clear()
    for stream in (False, True):
        body = {"model": "default", "messages": USER, "stream": stream, **extra}
        err = error_of(client.post(CHAT, json=body), 400)
        assert err["code"] == "unsupported_parameter" and err["param"] == field
        assert f"'{field}' is not supported" in err["message"]
    assert chat.calls == []  # nothing went upstream


@pytest.mark.parametrize(
    "extra",
    [
        {"tools": []},
        {"tools": None},
        {"tool_choice": "none"},
        {"response_format": {"type": "text"}},
        {"logprobs": False},
    ],
)
def test_harmless_values_of_those_fields_are_accepted(client: httpx.Client, extra: dict) -> None:
    r = client.post(CHAT, json={"model": "default", "messages": USER, **extra})
    assert r.status_code == 200, r.text


def test_json_body_over_the_limit(client: httpx.Client) -> None:
    big = "x" * (300 * 1024)
    err = error_of(
        client.post(CHAT, json={"model": "default", "messages": [{"role": "user", "content": big}]}), 413
    )
    assert "262144 bytes" in err["message"]


def test_provider_bug_is_an_openai_shaped_500_not_a_crash(client: httpx.Client) -> None:
    err = error_of(
        client.post(CHAT, json={"model": "default", "messages": [{"role": "user", "content": "[crash]"}]}),
        500,
    )
    assert err["type"] == "server_error"
    # the server is still serving
    assert client.post(CHAT, json={"model": "default", "messages": USER}).status_code == 200


# --------------------------------------------------------------------------- transcription


def test_transcription_missing_file(client: httpx.Client) -> None:
    r = client.post("/v1/audio/transcriptions", data={"model": "whisper-1"}, files={"other": ("x", b"1")})
    err = error_of(r, 422)
    assert "file" in err["message"]


def test_transcription_missing_model(client: httpx.Client) -> None:
    r = client.post("/v1/audio/transcriptions", files={"file": ("a.wav", tone_wav())})
    err = error_of(r, 422)
    assert "model" in err["message"]


def test_transcription_not_multipart(client: httpx.Client) -> None:
    err = error_of(client.post("/v1/audio/transcriptions", json={"model": "whisper-1"}), 400)
    assert "multipart/form-data" in err["message"]


def test_transcription_unknown_model(client: httpx.Client) -> None:
    err = error_of(transcribe(client, tone_wav(), model="whisper-9"), 404)
    assert "whisper-9" in err["message"] and "whisper-1" in err["message"]


def test_empty_audio_file(client: httpx.Client) -> None:
    err = error_of(transcribe(client, b""), 400)
    assert "empty" in err["message"]
    assert err["param"] == "file"


def test_corrupt_audio_names_the_problem(client: httpx.Client) -> None:
    err = error_of(transcribe(client, b"RIFF\x10\x00\x00\x00WAVEjunk" + bytes(range(256)) * 8), 400)
    assert "corrupt" in err["message"] or "could not be" in err["message"]
    assert err["code"] == "invalid_audio"


def test_unsupported_format(client: httpx.Client) -> None:
    err = error_of(transcribe(client, b"%PDF-1.7 this is a document, not audio" * 20, name="doc.pdf"), 400)
    assert "unsupported or corrupt format" in err["message"]


def test_file_without_an_audio_stream(client: httpx.Client) -> None:
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as c:
        s = c.add_stream("mpeg4", rate=5)
        s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
        import numpy as np

        for _ in range(3):
            frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), "uint8"), format="rgb24")
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    err = error_of(transcribe(client, buf.getvalue(), name="v.mp4"), 400)
    assert "no audio stream" in err["message"]


def test_bad_response_format(client: httpx.Client) -> None:
    err = error_of(transcribe(client, tone_wav(), response_format="docx"), 422)
    assert "response_format" in err["message"]


def test_granularities_need_verbose_json(client: httpx.Client) -> None:
    r = client.post(
        "/v1/audio/transcriptions",
        files={"file": ("a.wav", tone_wav())},
        data={"model": "whisper-1", "timestamp_granularities[]": "word"},
    )
    err = error_of(r, 400)
    assert "verbose_json" in err["message"]


@pytest.mark.parametrize(
    ("path", "fields", "files"),
    [
        (
            "/v1/audio/transcriptions",
            {"model": "whisper-1", "prompt": b"hi \xff\xfe"},
            {"file": ("a.wav", b"x")},
        ),
        ("/v1/talk", {"text": b"hi \xff\xfe", "avatar_id": "av_x"}, {"image": ("a.png", b"x")}),
        ("/v1/avatars", {"face_index": b"\xff"}, {"image": ("a.png", b"x")}),
    ],
)
def test_non_utf8_form_text_is_refused(client: httpx.Client, path: str, fields: dict, files: dict) -> None:
    err = error_of(client.post(path, data=fields, files=files), 400)
    assert "is not valid UTF-8 text" in err["message"]
    assert err["code"] == "invalid_multipart"


def test_utf8_form_text_still_works(client: httpx.Client, fake_gateway: FakeGateway) -> None:
    asr = fake_gateway.provider("asr")
    asr.calls.clear()
    r = transcribe(client, tone_wav(), prompt="naïve café 你好")
    assert r.status_code == 200, r.text
    assert asr.calls[-1].prompt == "naïve café 你好"


def test_upload_over_the_limit_is_413(client: httpx.Client) -> None:
    err = error_of(transcribe(client, tone_wav(seconds=10)), 413)  # 320 KB > 256 KiB
    assert "262144 bytes" in err["message"]


def _raw_upload(url: str, head: bytes, body_pieces: int, piece: bytes) -> tuple[bytes, int]:
    """Send a request over a raw socket, piece by piece, until the server answers.

    Returns (response bytes, number of pieces sent before the answer came).
    """
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head)
        sock.setblocking(False)
        sent = 0
        response = b""
        deadline = time.monotonic() + 20
        while sent < body_pieces and time.monotonic() < deadline:
            try:
                response += sock.recv(65536)
            except BlockingIOError:
                pass
            if response:
                break
            try:
                sock.sendall(piece)
            except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                time.sleep(0.01)
                continue
            sent += 1
        sock.setblocking(True)
        try:
            while b"\r\n\r\n" not in response or not response.rstrip().endswith(b"}"):
                more = sock.recv(65536)
                if not more:
                    break
                response += more
        except OSError:
            pass
    return response, sent


def test_chunked_upload_over_the_limit_is_refused_while_it_arrives(fake_gateway: FakeGateway) -> None:
    """No Content-Length: the gateway answers 413 once past the limit, long before the upload ends."""
    form_head = (
        b'--b\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n'
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
    )
    head = (
        b"POST /v1/audio/transcriptions HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n"
        b"content-type: multipart/form-data; boundary=b\r\n\r\n"
        + b"%x\r\n%s\r\n"
        % (len(form_head), form_head)
    )
    data = b"\0" * 65536
    piece = b"%x\r\n%s\r\n" % (len(data), data)
    response, sent = _raw_upload(fake_gateway.url, head, 1024, piece)  # would be 64 MiB
    assert response.startswith(b"HTTP/1.1 413"), response[:200]
    assert b"262144 bytes" in response
    assert b"connection: close" in response.lower()
    # limit (256 KiB) + form allowance (1 MiB) is ~20 pieces; allow for socket buffers
    assert sent < 200


def test_declared_content_length_over_limit_is_refused_before_the_body(fake_gateway: FakeGateway) -> None:
    head = (
        b"POST /v1/audio/transcriptions HTTP/1.1\r\nhost: x\r\ncontent-length: 52428800\r\n"
        b"content-type: multipart/form-data; boundary=b\r\n\r\n"
    )
    response, sent = _raw_upload(fake_gateway.url, head, 800, b"\0" * 65536)
    assert response.startswith(b"HTTP/1.1 413"), response[:200]
    assert sent < 100


# --------------------------------------------------------------------------- speech


SPEECH = "/v1/audio/speech"


def test_speech_empty_input(client: httpx.Client) -> None:
    err = error_of(client.post(SPEECH, json={"model": "tts-1", "input": "   ", "voice": "alloy"}), 400)
    assert "input is empty" in err["message"]
    assert err["param"] == "input"


def test_speech_text_too_long(client: httpx.Client) -> None:
    err = error_of(client.post(SPEECH, json={"model": "tts-1", "input": "a" * 201, "voice": "alloy"}), 400)
    assert "200" in err["message"] and "201" in err["message"]
    assert err["code"] == "input_too_long"


@pytest.mark.parametrize("speed", [0.1, 4.5])
def test_speech_invalid_speed(client: httpx.Client, speed: float) -> None:
    err = error_of(client.post(SPEECH, json={"model": "tts-1", "input": "hi", "speed": speed}), 422)
    assert "speed" in err["message"]
    assert ("0.25" in err["message"]) or ("4" in err["message"])


def test_speech_unsupported_format(client: httpx.Client) -> None:
    err = error_of(client.post(SPEECH, json={"model": "tts-1", "input": "hi", "response_format": "ogg"}), 422)
    assert "response_format" in err["message"] and "mp3" in err["message"]


def test_speech_missing_input(client: httpx.Client) -> None:
    err = error_of(client.post(SPEECH, json={"model": "tts-1"}), 422)
    assert "input" in err["message"]


def test_speech_unknown_model(client: httpx.Client) -> None:
    err = error_of(client.post(SPEECH, json={"model": "tts-9", "input": "hi"}), 404)
    assert "tts-1" in err["message"]


def test_speech_malformed_json(client: httpx.Client) -> None:
    err = error_of(client.post(SPEECH, content=b"{input: hi}"), 400)
    assert "not valid JSON" in err["message"]
