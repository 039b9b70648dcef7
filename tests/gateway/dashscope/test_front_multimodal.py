"""Qwen-VL and qwen-tts through the front door's multimodal-generation endpoint: the official
``dashscope`` SDK's ``MultiModalConversation`` pointed at the GATEWAY, which serves them with the
chat chain (images checked as on /v1) and the TTS chain (local piper when the cloud fails)."""

from __future__ import annotations

import base64
import io
import wave
from collections.abc import Callable
from typing import Any

import dashscope
import httpx
import numpy as np
import pytest
from dashscope import MultiModalConversation
from PIL import Image

from tests.conftest import SimHandle
from tests.gateway.dashscope.front_support import ADMIN_KEY, usage_rows
from tests.gateway.inputs.test_images import png_bomb

VL = {"chat": {"extra_models": ["qwen-vl-max"]}}
QWEN_TTS = {"tts": {"extra_models": ["qwen-tts"]}}
#: The base URL the gateway builds audio URLs from (never from the Host header).
PUBLIC = "https://talk.example.test/gw"
SPOKEN = "Hello from the front door. This is qwen tts."


def png_url(size: tuple[int, int], colour: tuple[int, int, int]) -> str:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


def ask(image: str, text: str = "What is in the picture?") -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"image": image}, {"text": text}]}]


# --------------------------------------------------------------------------- Qwen-VL


def test_qwen_vl_plain_and_streamed(front: Callable[..., Any], sim: SimHandle) -> None:
    server, _ = front(routes=VL)
    r = MultiModalConversation.call(model="qwen-vl-max", messages=ask(png_url((64, 48), (220, 30, 30))))
    assert r.status_code == 200, r
    [content] = r.output.choices[0].message.content
    # the simulator describes the image it received: the gateway passed it on intact
    assert "64x48" in content["text"] and "red" in content["text"]
    assert r.output.choices[0].finish_reason == "stop" and r.usage.input_tokens > 0
    upstream = sim.requests("generation")[-1]
    assert upstream["model"] == "qwen-vl-max" and upstream["path"].endswith(
        "multimodal-generation/generation"
    )

    chunks = list(
        MultiModalConversation.call(
            model="qwen-vl-max",
            messages=ask(png_url((30, 20), (20, 40, 230))),
            stream=True,
            incremental_output=True,
        )
    )
    assert all(c.status_code == 200 for c in chunks), chunks[-1]
    pieces = [p["text"] for c in chunks for p in c.output.choices[0].message.content]
    text = "".join(pieces)
    assert len([p for p in pieces if p]) > 3 and "30x20" in text and "blue" in text
    assert chunks[-1].output.choices[0].finish_reason == "stop"
    rows = [r for r in usage_rows(server, 2) if r["route"].endswith("multimodal-generation/generation")]
    assert [r["provider"] for r in rows] == ["bailian:qwen-vl-max"] * 2
    assert all(r["status"] == 200 and r["tokens_out"] > 0 for r in rows)


def test_bad_images_are_refused_before_any_call(front: Callable[..., Any], sim: SimHandle) -> None:
    front(routes=VL)

    def refused(image: str) -> Any:
        r = MultiModalConversation.call(model="qwen-vl-max", messages=ask(image))
        assert r.status_code == 400 and r.code == "InvalidParameter" and r.request_id, r
        return r.message

    bomb = "data:image/png;base64," + base64.b64encode(png_bomb(20000)).decode()
    assert "too many pixels" in refused(bomb)
    assert "could not be read" in refused("data:image/png;base64," + base64.b64encode(b"no image").decode())
    assert "not on vision.url_allow" in refused("http://example.com/cat.png")
    assert sim.requests() == []


def test_a_chain_that_cannot_see_says_so(front: Callable[..., Any], sim: SimHandle) -> None:
    front(routes=VL)
    # qwen-plus's chain (qwen-plus, then the local model) takes no images: 400 before any call
    r = MultiModalConversation.call(model="qwen-plus", messages=ask(png_url((8, 8), (0, 0, 0))))
    assert r.status_code == 400 and "takes images" in r.message, r
    assert sim.requests() == []
    # the vision model failing: the local model is not tried with images, and the error says why
    sim.fault(service="generation", status=500, code="InternalError")
    failed = MultiModalConversation.call(model="qwen-vl-max", messages=ask(png_url((8, 8), (0, 0, 0))))
    assert failed.status_code == 503 and failed.code == "ModelUnavailable", failed
    assert "local:smollm2: not tried: it takes no images" in failed.message
    assert {c["model"] for c in sim.requests("generation")} == {"qwen-vl-max"}


# --------------------------------------------------------------------------- qwen-tts


def _pcm_of_wav(data: bytes) -> tuple[bytes, int]:
    with wave.open(io.BytesIO(data)) as w:
        return w.readframes(w.getnframes()), w.getframerate()


def _fetch(server: Any, url: str, key: str | None) -> httpx.Response:
    assert url.startswith(PUBLIC + "/api/v1/tts/audio/"), url
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.get(server.url + url[len(PUBLIC) :], headers=headers, timeout=30)


def test_qwen_tts_plain_url_and_stream(front: Callable[..., Any], sim: SimHandle) -> None:
    server, key = front(routes=QWEN_TTS, public_base_url=PUBLIC)
    r = MultiModalConversation.call(model="qwen-tts", text=SPOKEN, voice="Cherry")
    assert r.status_code == 200, r
    assert r.output.finish_reason == "stop" and r.usage["characters"] == len(SPOKEN)
    got = _fetch(server, r.output.audio["url"], key)
    assert got.status_code == 200 and got.headers["content-type"] == "audio/wav"
    pcm, rate = _pcm_of_wav(got.content)
    assert rate == 24000 and len(pcm) / 2 / rate > 1.0
    # the same audio as Bailian's (the simulator's) own answer for this text and voice
    direct_base, dashscope.base_http_api_url = dashscope.base_http_api_url, sim.http_base
    try:
        direct = MultiModalConversation.call(
            model="qwen-tts", text=SPOKEN, voice="Cherry", api_key=sim.api_key
        )
    finally:
        dashscope.base_http_api_url = direct_base
    assert pcm == _pcm_of_wav(httpx.get(direct.output.audio["url"], timeout=30).content)[0]
    upstream = sim.requests("tts")[0]
    assert upstream["body"]["input"] == {"text": SPOKEN, "voice": "Cherry"}

    chunks = list(MultiModalConversation.call(model="qwen-tts", text=SPOKEN, voice="Cherry", stream=True))
    assert all(c.status_code == 200 for c in chunks), chunks[-1]
    streamed = b"".join(
        base64.b64decode(c.output.audio["data"]) for c in chunks if c.output.audio.get("data")
    )
    assert len(chunks) > 2 and streamed == pcm
    assert chunks[-1].output.finish_reason == "stop"
    assert _pcm_of_wav(_fetch(server, chunks[-1].output.audio["url"], key).content)[0] == pcm

    # the URL is the tenant's: no key → 401; another tenant's key → 404
    assert _fetch(server, r.output.audio["url"], None).status_code == 401
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    other = httpx.post(
        f"{server.url}/admin/keys", json={"tenant": "globex", "scopes": ["tts"]}, headers=admin, timeout=30
    )
    assert other.status_code == 201, other.text
    stranger = _fetch(server, r.output.audio["url"], other.json()["key"])
    assert stranger.status_code == 404 and set(stranger.json()) == {"code", "message", "request_id"}
    rows = [r for r in usage_rows(server, 2) if r["route"].endswith("multimodal-generation/generation")]
    assert [(r["provider"], r["characters"]) for r in rows] == [("bailian:qwen-tts", len(SPOKEN))] * 2


def test_qwen_tts_bad_input_and_quota(front: Callable[..., Any], sim: SimHandle) -> None:
    front(routes=QWEN_TTS, quotas={"tts_chars": 10})
    empty = MultiModalConversation.call(model="qwen-tts", text="  ", voice="Cherry")
    assert empty.status_code == 400 and empty.code == "InvalidParameter" and "input.text" in empty.message
    unknown = MultiModalConversation.call(model="qwen-tts-nonexistent", text="hi", voice="Cherry")
    assert unknown.status_code == 404 and unknown.code == "ModelNotFound"
    over = MultiModalConversation.call(model="qwen-tts", text=SPOKEN, voice="Cherry")
    assert over.status_code == 429 and over.code == "Throttling.AllocationQuota"
    assert sim.requests("tts") == []


def test_qwen_tts_falls_back_to_piper(front: Callable[..., Any], sim: SimHandle) -> None:
    server, key = front(routes=QWEN_TTS, public_base_url=PUBLIC)
    sim.fault(service="tts", status=500, code="InternalError")
    r = MultiModalConversation.call(model="qwen-tts", text=SPOKEN, voice="Cherry")
    assert r.status_code == 200, r
    pcm, rate = _pcm_of_wav(_fetch(server, r.output.audio["url"], key).content)
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    assert rate == 24000 and len(samples) / rate > 1.0 and np.sqrt(np.mean(samples**2)) > 300
    chunks = list(MultiModalConversation.call(model="qwen-tts", text=SPOKEN, voice="Cherry", stream=True))
    assert chunks[-1].status_code == 200 and chunks[-1].output.finish_reason == "stop"
    streamed = b"".join(
        base64.b64decode(c.output.audio["data"]) for c in chunks if c.output.audio.get("data")
    )
    assert len(streamed) / 2 / 24000 > 1.0
    rows = [r for r in usage_rows(server, 2) if r["route"].endswith("multimodal-generation/generation")]
    assert {r["provider"] for r in rows} == {"local:piper-joe"} and all(r["fallback"] for r in rows)


def test_a_fallback_at_another_rate_is_resampled_to_24k(front: Callable[..., Any], sim: SimHandle) -> None:
    """qwen-tts failing, the chain's CosyVoice answers at 22,050 Hz; the answer is 24 kHz PCM."""
    from dashscope.audio.tts_v2 import AudioFormat, SpeechSynthesizer

    server, key = front(routes=QWEN_TTS, public_base_url=PUBLIC)
    sim.fault(service="tts", model="qwen-tts", status=500, code="InternalError")
    # a CosyVoice voice name: Qwen-TTS gets its default voice for it, CosyVoice the name itself
    r = MultiModalConversation.call(model="qwen-tts", text=SPOKEN, voice="longxiaochun_v2")
    assert r.status_code == 200, r
    pcm, rate = _pcm_of_wav(_fetch(server, r.output.audio["url"], key).content)
    # the simulator's own CosyVoice audio for the same text, at its native 22,050 Hz
    saved = (dashscope.base_websocket_api_url, dashscope.api_key)
    dashscope.base_websocket_api_url, dashscope.api_key = sim.ws_base, sim.api_key
    try:
        native = SpeechSynthesizer(
            model="cosyvoice-v2", voice="longxiaochun_v2", format=AudioFormat.PCM_22050HZ_MONO_16BIT
        ).call(SPOKEN)
    finally:
        dashscope.base_websocket_api_url, dashscope.api_key = saved
    assert rate == 24000
    assert len(pcm) / 2 == pytest.approx(len(native) / 2 * 24000 / 22050, rel=0.005)
    rows = [r for r in usage_rows(server) if r["route"].endswith("multimodal-generation/generation")]
    assert rows[0]["provider"] == "bailian:cosyvoice-v2" and rows[0]["fallback"]


def test_a_speech_model_keeps_its_own_errors(front: Callable[..., Any], sim: SimHandle) -> None:
    """A speech model whose body lacks its input gets that endpoint's 400, not a chat 404."""
    front(routes=QWEN_TTS)
    no_audio = [{"role": "user", "content": [{"text": "no audio here"}]}]
    r = MultiModalConversation.call(model="qwen3-asr-flash", messages=no_audio)
    assert r.status_code == 400 and "No audio" in r.message, r
    assert sim.requests() == []
