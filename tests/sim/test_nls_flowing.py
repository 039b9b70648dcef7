"""The simulated NLS streaming-text TTS (``FlowingSpeechSynthesizer``) over a raw WebSocket: the
official Python SDK's ``NlsStreamInputTtsSynthesizer`` is not in its PyPI wheel (reference
nls-protocol.md §6), so the test speaks the protocol as that class does (``session_id`` in the
payload, ``volumn``)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import aiohttp
import numpy as np
import pytest

from gateway.sim.voice import synthesize
from tests.conftest import SimHandle
from tests.nls_support import reset_nls
from tests.sim.test_nls_ws import directive, token_for, ws_url

NS = "FlowingSpeechSynthesizer"


@pytest.fixture
def nls_sim(sim: SimHandle) -> Iterator[SimHandle]:
    reset_nls(sim)
    yield sim
    reset_nls(sim)


async def _next_event(ws: aiohttp.ClientWebSocketResponse, audio: bytearray) -> dict[str, Any]:
    """The next JSON event; binary frames on the way are added to ``audio``."""
    while True:
        msg = await ws.receive(timeout=10)
        if msg.type is aiohttp.WSMsgType.BINARY:
            audio += msg.data
        elif msg.type is aiohttp.WSMsgType.TEXT:
            return msg.json()
        else:
            raise AssertionError(f"socket ended: {msg.type}")


async def _until(
    ws: aiohttp.ClientWebSocketResponse, name: str, seen: list[dict[str, Any]], audio: bytearray
) -> None:
    while not seen or seen[-1]["header"]["name"] != name:
        seen.append(await _next_event(ws, audio))
        assert seen[-1]["header"]["name"] != "TaskFailed", seen[-1]


async def test_sentences_are_spoken_as_the_text_streams_in(nls_sim: SimHandle) -> None:
    tid = uuid.uuid4().hex
    seen: list[dict[str, Any]] = []
    audio = bytearray()
    start = directive(
        NS,
        "StartSynthesis",
        tid,
        voice="longxiaochun",
        format="wav",
        sample_rate=16000,
        volumn=60,
        session_id=uuid.uuid4().hex,
    )
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(ws_url(nls_sim), headers={"X-NLS-Token": token_for(nls_sim)})
        await ws.send_str(start)
        await _until(ws, "SynthesisStarted", seen, audio)
        for fragment in ("Hello the", "re. How can I he"):
            await ws.send_str(directive(NS, "RunSynthesis", tid, text=fragment))
        # the first sentence is complete: it is spoken before any more text or the Stop
        await _until(ws, "SentenceEnd", seen, audio)
        first_audio = len(audio)
        await ws.send_str(directive(NS, "RunSynthesis", tid, text="lp you today? Thanks"))
        await ws.send_str(directive(NS, "StopSynthesis", tid))
        await _until(ws, "SynthesisCompleted", seen, audio)
        await ws.close()
    names = [e["header"]["name"] for e in seen]
    per_sentence = ["SentenceBegin", "SentenceSynthesis", "SentenceEnd"]
    assert names == ["SynthesisStarted", *per_sentence * 3, "SynthesisCompleted"]
    assert [e["payload"]["index"] for e in seen if e["header"]["name"] == "SentenceBegin"] == [0, 1, 2]
    assert all(e["header"]["task_id"] == tid and e["header"]["status"] == 20000000 for e in seen)
    assert "payload" not in seen[0] and seen[3]["payload"] == {"subtitles": []}
    # one WAV stream: a single header, then each sentence's speech in order
    assert audio[:4] == b"RIFF" and audio.count(b"RIFF") == 1
    sentences = ["Hello there.", "How can I help you today?", "Thanks"]
    expected = [synthesize(s, 16000, 60).pcm.astype("<i2").tobytes() for s in sentences]
    assert bytes(audio[44:]) == b"".join(expected)
    assert first_audio == 44 + len(expected[0])
    assert np.abs(np.frombuffer(bytes(audio[44:]), "<i2")).max() > 1000
    [logged] = nls_sim.requests("nls-tts")
    assert logged["status"] == 200 and logged["text_chars"] == len(
        "Hello there. How can I help you today? Thanks"
    )


async def test_flowing_directives_are_checked(nls_sim: SimHandle) -> None:
    async def run(*frames: str) -> list[dict[str, Any]]:
        seen: list[dict[str, Any]] = []
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(ws_url(nls_sim), headers={"X-NLS-Token": token_for(nls_sim)})
            for frame in frames:
                await ws.send_str(frame)
            async for msg in ws:
                if msg.type is aiohttp.WSMsgType.TEXT:
                    seen.append(msg.json())
        return seen

    tid = uuid.uuid4().hex
    early = await run(directive(NS, "RunSynthesis", tid, text="hi"))
    assert early[-1]["header"]["name"] == "TaskFailed" and early[-1]["header"]["status"] == 40000002
    too_long = await run(
        directive(NS, "StartSynthesis", tid, format="pcm", sample_rate=16000),
        directive(NS, "RunSynthesis", tid, text="a" * 10_001),
    )
    assert [e["header"]["name"] for e in too_long] == ["SynthesisStarted", "TaskFailed"]
    assert too_long[-1]["header"]["status"] == 40000003
    bad_rate = await run(directive(NS, "StartSynthesis", uuid.uuid4().hex, sample_rate=12345))
    assert bad_rate[-1]["header"]["status"] == 40000003
