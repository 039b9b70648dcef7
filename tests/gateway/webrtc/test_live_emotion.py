"""The live avatar shows each answer's emotion while its audio plays: a real call (aiortc peer,
real gateway, the Bailian simulator), a happy and a sad answer in turn; the face's expression is
read on the gateway's side of the call at the playback events the page gets."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.gateway.webrtc.peer_client import LiveClient
from tests.lipsync.media import astronaut_png

ANSWERS = {
    "How did my exam go?": "Congratulations, you passed! That is wonderful news.",
    "What happened to the old shop?": "That is sad news: unfortunately the shop lost everything in the fire.",
}


@pytest.fixture
def server(gateway_settings: Callable[..., Any], run_gateway: Callable[..., Any], sim: Any) -> Iterator[Any]:
    sim.control("PUT", "/sim/config", json={"answers": ANSWERS}).raise_for_status()
    try:
        yield run_gateway(gateway_settings())
    finally:
        sim.control("DELETE", "/sim/config")


def _ask(client: LiveClient, text: str) -> None:
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    client.send({"type": "conversation.item.create", "item": item})
    client.send({"type": "response.create"})


def _avatar(server: Any) -> dict[str, Any]:
    r = httpx.post(
        f"{server.url}/v1/avatars", files={"image": ("me.png", astronaut_png(), "image/png")}, timeout=60
    )
    assert r.status_code == 201, r.text
    return r.json()


async def test_the_face_shows_each_answers_emotion_while_it_plays(server: Any) -> None:
    client = LiveClient(server.url, _avatar(server))
    try:
        assert (await client.connect()).status_code == 201
        await client.wait_for("session.updated", 10)
        (call,) = server.server.config.app.state.services.calls.calls.values()
        face = call.video.face
        assert face.emotion == "neutral"
        shown = {}
        for question, expected in zip(ANSWERS, ("happy", "sad"), strict=True):
            asked = time.monotonic()
            _ask(client, question)
            started = await client.wait_for("output_audio_buffer.started", 30, asked)
            shown[expected] = face.emotion  # set before the page was told that playback started
            await client.wait_for("response.done", 30, asked)
            # the answer's last stretch of audio ends with a "stopped" (a slow TTS may leave gaps)
            while True:
                stopped = await client.wait_for("output_audio_buffer.stopped", 30, started[0])
                again = client.rec.first_event("output_audio_buffer.started", stopped[0])
                if again is None and not call.buffer.pending:
                    break
                started = again or await client.wait_for("output_audio_buffer.started", 30, stopped[0])
            assert face.emotion == "neutral"  # back to rest once the answer has been heard
        assert shown == {"happy": "happy", "sad": "sad"}
        # the expression was drawn: the face's feature warp exists and moved away from rest
        assert face._features is not None
    finally:
        await client.close()
