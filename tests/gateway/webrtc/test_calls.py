"""POST /v1/realtime/calls end to end with a Python WebRTC peer (aiortc) against a real gateway
and the Bailian simulator: signalling and its refusals, events on the data channel, audio and
video on the tracks, spoken turns through server VAD, barge-in on the media path."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from providers.wav import resample
from tests.gateway.webrtc.peer_client import RATE, LiveClient
from tests.lipsync.media import astronaut_png
from tests.sounds import piper_speech

QUESTION = "What time does the store open?"
ANSWER = "The store opens at nine in the morning and closes at eight in the evening."
LONG = " ".join(
    [
        "Let me tell you everything about our store, its history, its opening hours and its services.",
        "We opened in nineteen ninety two as a small bookshop on the corner of the market square,",
        "and over the years we grew into a place where people come to read, to meet and to learn.",
        "Today we open at nine in the morning and close at eight in the evening, every day of the week.",
    ]
    * 2
)
OFFER_WITHOUT_AUDIO = None  # built per test (needs a peer)


@pytest.fixture
def server(gateway_settings: Callable[..., Any], run_gateway: Callable[..., Any], sim: Any) -> Iterator[Any]:
    answers = {QUESTION: ANSWER, "Tell me everything.": LONG}
    sim.control(
        "PUT", "/sim/config", json={"answers": answers, "asr_transcript": QUESTION}
    ).raise_for_status()
    try:
        yield run_gateway(gateway_settings())
    finally:
        sim.control("DELETE", "/sim/config")


def _avatar(server: Any) -> dict[str, Any]:
    r = httpx.post(
        f"{server.url}/v1/avatars", files={"image": ("me.png", astronaut_png(), "image/png")}, timeout=60
    )
    assert r.status_code == 201, r.text
    return r.json()


def _spoken(text: str) -> np.ndarray:
    signal, rate = piper_speech(text)
    return resample(signal, rate, RATE).astype(np.float32)


def _ask(client: LiveClient, text: str) -> None:
    client.send(
        {
            "type": "conversation.item.create",
            "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]},
        }
    )
    client.send({"type": "response.create"})


def _loud(rec: Any, start: float, end: float = float("inf"), level: float = 0.01) -> list[float]:
    return [t for t, rms in rec.audio if start <= t <= end and rms > level]


async def test_typed_question_is_answered_on_the_tracks_not_the_channel(server: Any) -> None:
    client = LiveClient(server.url, None)
    try:
        r = await client.connect()
        assert r.status_code == 201, r.text
        assert r.headers["content-type"].startswith("application/sdp")
        assert r.headers["location"].startswith("/v1/realtime/calls/sess_")
        created = await client.wait_for("session.created", 10)
        updated = await client.wait_for("session.updated", 10)
        assert updated[1]["session"]["audio"]["input"]["turn_detection"]["type"] == "server_vad"
        asked = time.monotonic()
        _ask(client, QUESTION)
        done = await client.wait_for("response.done", 30, asked)
        assert done[1]["response"]["status"] == "completed"
        started = await client.wait_for("output_audio_buffer.started", 10, asked)
        stopped = await client.wait_for("output_audio_buffer.stopped", 30, started[0])
        backend = await client.wait_for("talkgate.response.backend", 1, asked)
        assert backend[1]["backend"] == "cloud" and backend[1]["provider"].startswith("bailian:")
        kinds = [e["type"] for _, e in client.rec.events]
        assert "response.output_audio.delta" not in kinds  # audio travels on the track only
        text = "".join(
            e["delta"] for _, e in client.rec.events if e["type"] == "response.output_audio_transcript.delta"
        )
        assert text == ANSWER
        loud = _loud(client.rec, started[0] - 0.5, stopped[0] + 0.5)
        assert len(loud) > 50  # > 1 s of the spoken answer arrived as audio
        assert not _loud(client.rec, created[0], asked)  # silence before the question
    finally:
        await client.close()


async def test_spoken_question_through_server_vad_with_avatar_video(server: Any) -> None:
    avatar = _avatar(server)
    speech = _spoken(QUESTION)
    client = LiveClient(server.url, avatar)
    try:
        session = {"instructions": "You are a shop assistant.", "avatar_id": avatar["id"]}
        r = await client.connect(session=session)  # OpenAI's multipart form: sdp + session
        assert r.status_code == 201, r.text
        await client.wait_for("session.updated", 10)
        client.mic.say(np.concatenate([np.zeros(RATE // 2, np.float32), speech]))
        await client.wait_for("input_audio_buffer.speech_started", 15)
        stopped = await client.wait_for("input_audio_buffer.speech_stopped", 15)
        transcript = await client.wait_for("conversation.item.input_audio_transcription.completed", 15)
        assert transcript[1]["transcript"] == QUESTION
        first_audio = await client.wait_for("output_audio_buffer.started", 30, stopped[0])
        await client.wait_for("output_audio_buffer.stopped", 30, first_audio[0])
        assert client.rec.size is not None
        w, h = client.rec.size
        assert max(w, h) <= 480 and w % 2 == 0 and h % 2 == 0
        frames = [t for t, *_ in client.rec.video]
        span = frames[-1] - frames[0]
        assert len(frames) / span > 20, (len(frames), span)  # ~25 fps arrived
        # The mouth moved while the answer played and rested before it.
        motion = client.rec.mouth_motion(stopped[0] - 2.0, stopped[0])
        speaking = [m for t, m in motion if first_audio[0] + 0.2 < t < first_audio[0] + 2.0]
        before = [m for t, m in motion if stopped[0] - 2.0 <= t < stopped[0]]
        assert max(speaking) > 3 * max(before) + 1.0, (max(speaking), max(before))
    finally:
        await client.close()


async def test_barge_in_silences_the_answer_within_150_ms(server: Any) -> None:
    interruption = _spoken("Wait, stop please.")  # synthesised before the call, not during it
    client = LiveClient(server.url, None)
    try:
        assert (await client.connect()).status_code == 201
        await client.wait_for("session.updated", 10)
        asked = time.monotonic()
        _ask(client, "Tell me everything.")
        started = await client.wait_for("output_audio_buffer.started", 30, asked)
        await asyncio.sleep(2.0)  # the long answer is playing
        assert _loud(client.rec, started[0] + 1.0)
        client.mic.say(interruption)
        barge = await client.wait_for("input_audio_buffer.speech_started", 10, started[0])
        cleared = await client.wait_for("output_audio_buffer.cleared", 2, started[0])
        assert cleared[0] - barge[0] < 0.05  # the same moment on the gateway
        await asyncio.sleep(1.0)
        loud_after = _loud(client.rec, barge[0])
        last = max(loud_after) if loud_after else barge[0]
        assert last - barge[0] <= 0.15, last - barge[0]
        # The remembered answer is cut to what was heard (the frames that reached us), as OpenAI's
        # WebRTC endpoint does: the gateway owns the playout, so it knows.
        truncated = await client.wait_for("conversation.item.truncated", 10, barge[0])
        heard_ms = 20 * sum(1 for t, _ in client.rec.audio if started[0] - 0.2 <= t <= barge[0])
        assert abs(truncated[1]["audio_end_ms"] - heard_ms) < 300, (truncated, heard_ms)
    finally:
        await client.close()


# ---------------------------------------------------------------------- refusals


async def _offer(audio: bool = True) -> str:
    from aiortc import RTCPeerConnection

    pc = RTCPeerConnection()
    if audio:
        pc.addTransceiver("audio", direction="sendrecv")
    else:
        pc.createDataChannel("oai-events")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


async def test_bad_offers_are_clear_4xx(server: Any) -> None:
    url = f"{server.url}/v1/realtime/calls"
    async with httpx.AsyncClient(timeout=30) as http:
        r = await http.post(url, content="hello", headers={"content-type": "application/sdp"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_sdp"
        garbled = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\nm=audio nonsense\r\na=rtpmap:x\r\n"
        r = await http.post(url, content=garbled, headers={"content-type": "application/sdp"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_sdp", r.text
        r = await http.post(url, content=b"<xml/>", headers={"content-type": "application/xml"})
        assert r.status_code == 415 and r.json()["error"]["code"] == "invalid_content_type"
        r = await http.post(
            url, content=b"v=0\r\n" + b"a" * 70000, headers={"content-type": "application/sdp"}
        )
        assert r.status_code == 413
        r = await http.post(
            url, content=await _offer(audio=False), headers={"content-type": "application/sdp"}
        )
        assert r.status_code == 400 and "audio" in r.json()["error"]["message"]
        sdp = await _offer()
        r = await http.post(url, files={"sdp": (None, sdp), "session": (None, "{not json")})
        assert r.status_code == 400 and r.json()["error"]["param"] == "session"
        r = await http.post(url, json={"sdp": sdp, "session": []})
        assert r.status_code == 400 and r.json()["error"]["param"] == "session"
        r = await http.post(
            url,
            params={"avatar_id": "av_" + "0" * 32},
            content=sdp,
            headers={"content-type": "application/sdp"},
        )
        assert r.status_code == 404 and r.json()["error"]["code"] == "avatar_not_found"
        r = await http.post(
            url, params={"model": "no-such-model"}, content=sdp, headers={"content-type": "application/sdp"}
        )
        assert r.status_code in (400, 404) and r.json()["error"]["code"] == "model_not_found"
        r = await http.post(f"{url}/sess_nope/hangup")
        assert r.status_code == 404


async def test_keys_are_required_when_auth_is_on(
    gateway_settings: Callable[..., Any], run_gateway: Callable[..., Any]
) -> None:
    server = run_gateway(gateway_settings(admin_key="a-long-admin-key-for-tests-0123"))
    sdp = await _offer()
    url = f"{server.url}/v1/realtime/calls"
    async with httpx.AsyncClient(timeout=30) as http:
        r = await http.post(url, content=sdp, headers={"content-type": "application/sdp"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        r = await http.post(
            url, content=sdp, headers={"content-type": "application/sdp", "authorization": "Bearer nope"}
        )
        assert r.status_code == 401
        r = await http.get(f"{server.url}/demo/config.json")
        assert r.json()["auth_required"] is True
    client = LiveClient(server.url, None, key="a-long-admin-key-for-tests-0123")
    try:
        r = await client.connect()
        assert r.status_code == 201, r.text
        call = r.headers["location"]
        async with httpx.AsyncClient(timeout=30) as http:
            r = await http.post(
                f"{server.url}{call}/hangup",
                headers={"authorization": "Bearer a-long-admin-key-for-tests-0123"},
            )
        assert r.status_code == 200
        deadline = time.monotonic() + 10
        while client.pc.connectionState != "closed" and time.monotonic() < deadline:
            if client.channel.readyState == "closed":
                break
            await asyncio.sleep(0.1)
        assert client.channel.readyState == "closed" or client.pc.connectionState == "closed"
    finally:
        await client.close()


async def test_calls_beyond_the_limit_get_503(
    gateway_settings: Callable[..., Any], run_gateway: Callable[..., Any], sim: Any
) -> None:
    server = run_gateway(gateway_settings(webrtc={"max_calls": 1}))
    first = LiveClient(server.url, None)
    try:
        assert (await first.connect()).status_code == 201
        async with httpx.AsyncClient(timeout=30) as http:
            r = await http.post(
                f"{server.url}/v1/realtime/calls",
                content=await _offer(),
                headers={"content-type": "application/sdp"},
            )
        assert r.status_code == 503 and r.json()["error"]["code"] == "too_many_calls"
    finally:
        await first.close()


async def test_demo_page_is_served_without_third_party_code(server: Any) -> None:
    async with httpx.AsyncClient(timeout=10, follow_redirects=False) as http:
        r = await http.get(f"{server.url}/")
        assert r.status_code == 307 and r.headers["location"] == "/demo"
        page = await http.get(f"{server.url}/demo")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert "default-src 'self'" in page.headers["content-security-policy"]
        for name in ("app.js", "i18n.js", "style.css"):
            r = await http.get(f"{server.url}/demo/{name}")
            assert r.status_code == 200, name
            assert "http://" not in r.text and "https://" not in r.text, name  # nothing from a CDN
        assert "http" not in page.text.replace("http-equiv", "")
        assert (await http.get(f"{server.url}/demo/../settings.py")).status_code == 404
        config = (await http.get(f"{server.url}/demo/config.json")).json()
        assert config == {"auth_required": False, "ice_servers": [], "fps": 25}
        assert json.loads(json.dumps(config))
