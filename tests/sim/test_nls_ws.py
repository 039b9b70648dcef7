"""The simulated NLS gateway (/ws/v1): the official NLS Python SDK end to end, then the protocol
rules (handshake, directive order, parameters, timers, concurrency, faults) over a raw socket."""

from __future__ import annotations

import itertools
import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import aiohttp
import numpy as np
import pytest

from tests.conftest import SimHandle
from tests.nls_support import NLS_AK, NLS_APPKEY, NLS_APPKEY_8K, reset_nls
from tests.sounds import sine_pcm


@pytest.fixture
def nls_sim(sim: SimHandle) -> Iterator[SimHandle]:
    reset_nls(sim)
    sim.control("DELETE", "/sim/config").raise_for_status()
    yield sim
    reset_nls(sim)
    sim.control("DELETE", "/sim/config").raise_for_status()


def token_for(sim: SimHandle) -> str:
    return sim.nls.issue(NLS_AK).token


def ws_url(sim: SimHandle) -> str:
    return f"ws://127.0.0.1:{sim.nls_port}/ws/v1"


# --------------------------------------------------------------------------- official SDK


@pytest.mark.parametrize(("rate", "appkey"), [(16000, NLS_APPKEY), (8000, NLS_APPKEY_8K)])
def test_official_sdk_transcribes(nls_sim: SimHandle, rate: int, appkey: str) -> None:
    import nls

    nls_sim.control("PUT", "/sim/config", json={"asr_transcript": "Hello there. How can I help?"})
    seen: list[tuple[str, dict[str, Any]]] = []
    closed = threading.Event()

    def on(kind: str) -> Any:
        return lambda message, *args: seen.append((kind, json.loads(message)))

    transcriber = nls.NlsSpeechTranscriber(
        url=ws_url(nls_sim),
        token=token_for(nls_sim),
        appkey=appkey,
        on_start=on("start"),
        on_sentence_begin=on("begin"),
        on_sentence_end=on("end"),
        on_result_changed=on("changed"),
        on_completed=on("completed"),
        on_error=on("error"),
        on_close=lambda *a: closed.set(),
    )
    transcriber.start(aformat="pcm", sample_rate=rate, enable_intermediate_result=True)
    pcm = sine_pcm(2.0, rate)
    for offset in range(0, len(pcm), rate // 5):  # 100 ms frames
        transcriber.send_audio(pcm[offset : offset + rate // 5])
    transcriber.stop()
    assert closed.wait(10)
    kinds = [k for k, _ in seen]
    assert "error" not in kinds
    assert kinds[0] == "start" and kinds[-1] == "completed"
    assert "changed" in kinds  # intermediate results while the audio streamed
    ends = [m["payload"] for k, m in seen if k == "end"]
    assert [e["result"] for e in ends] == ["Hello there.", "How can I help?"]
    assert ends[0]["begin_time"] < ends[0]["time"] <= ends[1]["begin_time"] < ends[1]["time"] <= 2000
    task_ids = {m["header"]["task_id"] for _, m in seen}
    assert len(task_ids) == 1
    [logged] = nls_sim.requests("nls-asr")
    assert logged["model"] == appkey and logged["audio_bytes"] == len(pcm) and logged["status"] == 200


@pytest.mark.parametrize(("fmt", "rate"), [("pcm", 16000), ("wav", 8000), ("mp3", 24000)])
def test_official_sdk_synthesises(nls_sim: SimHandle, fmt: str, rate: int) -> None:
    import nls

    audio = bytearray()
    done: list[dict[str, Any]] = []
    errors: list[str] = []
    synthesizer = nls.NlsSpeechSynthesizer(
        url=ws_url(nls_sim),
        token=token_for(nls_sim),
        appkey=NLS_APPKEY,
        on_data=lambda data, *a: audio.extend(data),
        on_completed=lambda message, *a: done.append(json.loads(message)),
        on_error=lambda message, *a: errors.append(message),
    )
    synthesizer.start(
        "Good morning. Your call matters to us.", voice="xiaoyun", aformat=fmt, sample_rate=rate
    )
    assert not errors and done and done[0]["header"]["name"] == "SynthesisCompleted"
    if fmt == "pcm":
        samples = np.frombuffer(bytes(audio), "<i2")
        assert 1.0 < len(samples) / rate < 6.0 and np.abs(samples).max() > 1000
    elif fmt == "wav":
        assert audio[:4] == b"RIFF" and audio[8:12] == b"WAVE"
    else:
        assert audio[:3] == b"ID3" or (audio[0] == 0xFF and audio[1] & 0xE0 == 0xE0)


def test_official_sdk_with_a_bad_token_never_starts(nls_sim: SimHandle) -> None:
    import nls

    started: list[str] = []
    transcriber = nls.NlsSpeechTranscriber(
        url=ws_url(nls_sim), token="f" * 32, appkey=NLS_APPKEY, on_start=lambda m, *a: started.append(m)
    )
    transcriber.start(timeout=5)  # the SDK returns normally after a refused handshake
    transcriber.shutdown()
    assert started == []
    assert [r["status"] for r in nls_sim.requests("nls-ws")] == [403]


# --------------------------------------------------------------------------- raw protocol


def directive(namespace: str, name: str, task_id: str, appkey: str = NLS_APPKEY, **payload: Any) -> str:
    header = {
        "message_id": uuid.uuid4().hex,
        "task_id": task_id,
        "namespace": namespace,
        "name": name,
        "appkey": appkey,
    }
    return json.dumps({"header": header, **({"payload": payload} if payload else {})})


async def events_until_close(ws: aiohttp.ClientWebSocketResponse) -> list[dict[str, Any]]:
    found = []
    async for msg in ws:
        if msg.type is aiohttp.WSMsgType.TEXT:
            found.append(json.loads(msg.data))
    return found


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        (None, "Gateway:ACCESS_DENIED:Missing authorization header!"),
        ("0123", "Meta:ACCESS_DENIED:The token '0123' is invalid!."),
    ],
)
async def test_handshake_refuses_bad_tokens_with_403(
    nls_sim: SimHandle, token: str | None, expected: str
) -> None:
    headers = {"X-NLS-Token": token} if token else {}
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
            await session.ws_connect(ws_url(nls_sim), headers=headers)
        assert caught.value.status == 403
        async with session.get(ws_url(nls_sim), headers={**headers, "Upgrade": "websocket"}) as r:
            assert r.status in (400, 403)
        raw = await session.get(
            ws_url(nls_sim),
            headers={
                **headers,
                "Connection": "Upgrade",
                "Upgrade": "websocket",
                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                "Sec-WebSocket-Version": "13",
            },
        )
        assert raw.status == 403 and await raw.text() == expected


async def test_expired_token_and_query_token(nls_sim: SimHandle) -> None:
    token = token_for(nls_sim)
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(f"{ws_url(nls_sim)}?token={token}")  # the documented form
        await ws.close()
        nls_sim.nls.tokens[token].expire_time = 0
        r = await session.get(
            ws_url(nls_sim),
            headers={
                "X-NLS-Token": token,
                "Connection": "Upgrade",
                "Upgrade": "websocket",
                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                "Sec-WebSocket-Version": "13",
            },
        )
        assert r.status == 403 and "has expired" in await r.text()


async def run_raw(sim: SimHandle, *frames: str | bytes) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(ws_url(sim), headers={"X-NLS-Token": token_for(sim)})
        for frame in frames:
            if isinstance(frame, bytes):
                await ws.send_bytes(frame)
            else:
                await ws.send_str(frame)
        return await events_until_close(ws)


def failure(events: list[dict[str, Any]]) -> tuple[int, str]:
    last = events[-1]["header"]
    assert last["name"] == "TaskFailed" and last["namespace"] == "Default"
    return last["status"], last["status_text"]


async def test_protocol_errors_fail_the_task(nls_sim: SimHandle) -> None:
    tid = uuid.uuid4().hex
    start = directive("SpeechTranscriber", "StartTranscription", tid, format="pcm", sample_rate=16000)
    stop = directive("SpeechTranscriber", "StopTranscription", tid)
    cases = [
        ((b"\x00" * 320,), 40000002),  # audio before Start
        ((stop,), 40000002),  # Stop before Start
        ((start, stop, stop), 40010005),  # a second Stop
        ((directive("SpeechTranscriber", "StartTranscription", tid, sample_rate=44100),), 41010101),
        ((directive("SpeechTranscriber", "StartTranscription", tid, max_sentence_silence=50),), 40000003),
        ((directive("NoSuchService", "Start", tid),), 40010001),
        ((directive("SpeechTranscriber", "StartTranscription", tid, appkey="nope"),), 40020105),
        ((directive("SpeechTranscriber", "StartTranscription", "not-hex"),), 40000002),
        (("{not json",), 40000002),
    ]
    for frames, status in cases:
        events = await run_raw(nls_sim, *frames)
        assert failure(events)[0] == status, frames
        assert events[-1]["header"]["task_id"] in (tid, "")


async def test_idle_task_times_out_naming_the_last_directive(nls_sim: SimHandle) -> None:
    nls_sim.nls.config.idle_timeout_s = 0.3
    tid = uuid.uuid4().hex
    events = await run_raw(nls_sim, directive("SpeechTranscriber", "StartTranscription", tid))
    assert events[0]["header"]["name"] == "TranscriptionStarted"
    status, text = failure(events)
    assert status == 40000004
    assert text == (
        "Gateway:IDLE_TIMEOUT:Websocket session is idle for too long time, "
        "the last directive is 'StartTranscription'!"
    )


async def test_concurrency_cap_and_fault_injection(nls_sim: SimHandle) -> None:
    nls_sim.nls.config.max_concurrent = 1
    async with aiohttp.ClientSession() as session:
        first = await session.ws_connect(ws_url(nls_sim), headers={"X-NLS-Token": token_for(nls_sim)})
        await first.send_str(directive("SpeechTranscriber", "StartTranscription", uuid.uuid4().hex))
        assert json.loads((await first.receive()).data)["header"]["name"] == "TranscriptionStarted"
        events = await run_raw(
            nls_sim, directive("SpeechTranscriber", "StartTranscription", uuid.uuid4().hex)
        )
        assert failure(events) == (40000005, "Gateway:TOO_MANY_REQUESTS:Too many requests!")
        await first.close()
    nls_sim.nls.config.max_concurrent = 200
    nls_sim.fault(service="nls-tts", status=503, times=1)
    events = await run_raw(
        nls_sim, directive("SpeechSynthesizer", "StartSynthesis", uuid.uuid4().hex, text="hi")
    )
    assert failure(events)[0] == 50000001
    nls_sim.fault(service="nls-asr", model=NLS_APPKEY, code="40000010", status=403, times=1)
    events = await run_raw(nls_sim, directive("SpeechTranscriber", "StartTranscription", uuid.uuid4().hex))
    assert failure(events)[0] == 40000010


async def test_synthesis_subtitles_and_long_text(nls_sim: SimHandle) -> None:
    text = "Thank you for calling. " * 20  # 460 characters: NLS speaks the first 300
    events = await run_raw(
        nls_sim,
        directive("SpeechSynthesizer", "StartSynthesis", uuid.uuid4().hex, text=text, enable_subtitle=True),
    )
    names = [e["header"]["name"] for e in events]
    assert names == ["MetaInfo", "SynthesisCompleted"]
    subtitles = events[0]["payload"]["subtitles"]
    assert subtitles[0]["sentence"] is True and subtitles[0]["end_index"] == 300
    assert all(a["end_time"] <= b["begin_time"] for a, b in itertools.pairwise(subtitles[1:]))
    assert nls_sim.requests("nls-tts")[-1]["text_chars"] == 300


async def test_latency_and_cut_faults(nls_sim: SimHandle) -> None:
    import time

    tid = uuid.uuid4().hex
    nls_sim.fault(service="nls-asr", latency_ms=300, times=1)
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(ws_url(nls_sim), headers={"X-NLS-Token": token_for(nls_sim)})
        t0 = time.monotonic()
        await ws.send_str(directive("SpeechTranscriber", "StartTranscription", tid))
        assert json.loads((await ws.receive()).data)["header"]["name"] == "TranscriptionStarted"
        assert time.monotonic() - t0 >= 0.3
        await ws.close()
    nls_sim.fault(service="nls-tts", cut_after=2, times=1)  # two audio frames, then the socket drops
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(ws_url(nls_sim), headers={"X-NLS-Token": token_for(nls_sim)})
        text = "A long enough sentence to need several audio frames of synthesis."
        await ws.send_str(directive("SpeechSynthesizer", "StartSynthesis", uuid.uuid4().hex, text=text))
        kinds = []
        async for msg in ws:
            kinds.append(msg.type)
        assert kinds == [aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.BINARY]  # no SynthesisCompleted


def test_official_sdk_one_sentence_recognition(nls_sim: SimHandle) -> None:
    import nls

    nls_sim.control("PUT", "/sim/config", json={"asr_transcript": "Yes, please."})
    seen: list[dict[str, Any]] = []
    recognizer = nls.NlsSpeechRecognizer(
        url=ws_url(nls_sim),
        token=token_for(nls_sim),
        appkey=NLS_APPKEY,
        on_start=lambda m, *a: seen.append(json.loads(m)),
        on_completed=lambda m, *a: seen.append(json.loads(m)),
        on_error=lambda m, *a: seen.append(json.loads(m)),
    )
    recognizer.start(aformat="pcm")
    pcm = sine_pcm(1.0, 16000)
    for offset in range(0, len(pcm), 640):
        recognizer.send_audio(pcm[offset : offset + 640])
    recognizer.stop()
    assert [m["header"]["name"] for m in seen] == ["RecognitionStarted", "RecognitionCompleted"]
    assert seen[1]["payload"] == {"result": "Yes, please.", "duration": 1000}
