"""Streamed transcription of the user's speech under server VAD (gateway/realtime/live_transcript.py):
the official ``openai`` SDK's realtime client against the gateway, Bailian's Paraformer realtime
played by the simulator (partials while audio arrives), faster-whisper as the local fallback."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest

from gateway.realtime.live_transcript import LiveTranscript
from providers.base import Transcript, TranscriptPart
from providers.wav import float_to_pcm16, resample
from tests.conftest import SimHandle
from tests.gateway.realtime.test_realtime import _client, _until
from tests.gateway.saas_support import Gateway, database_url, query, saas  # noqa: F401
from tests.sounds import piper_speech, wav_of

RATE = 24000
QUESTION = "What time does the store open tomorrow?"
#: What the simulated Paraformer "hears" (its partials are growing prefixes of it).
HEARD = "What time does the store open tomorrow and on Sunday?"
VAD = {"type": "server_vad", "silence_duration_ms": 500, "create_response": False}
SESSION = {"type": "realtime", "output_modalities": ["text"], "audio": {"input": {"turn_detection": VAD}}}


@pytest.fixture(scope="module")
def speech() -> bytes:
    signal, rate = piper_speech(QUESTION)
    return float_to_pcm16(resample(signal, rate, RATE)).tobytes()


@pytest.fixture
def server(
    gateway_settings: Callable[..., Any], run_gateway: Callable[..., Any], sim: SimHandle
) -> Iterator[Any]:
    sim.control("PUT", "/sim/config", json={"asr_transcript": HEARD}).raise_for_status()
    try:
        yield run_gateway(gateway_settings(upstream_timeout_s=3.0))
    finally:
        sim.control("DELETE", "/sim/config")


def _append(conn: Any, pcm: bytes) -> None:
    conn.input_audio_buffer.append(audio=base64.b64encode(pcm).decode())


def _speak(conn: Any, pcm: bytes, chunk_ms: int = 100, pace: float = 1.0) -> None:
    """Streams ``pcm`` at ``pace`` × real time (a microphone does not send faster than it hears)."""
    step = RATE * 2 * chunk_ms // 1000
    for start in range(0, len(pcm), step):
        _append(conn, pcm[start : start + step])
        time.sleep(chunk_ms / 1000 / pace)


def _silence(seconds: float) -> bytes:
    return bytes(int(seconds * RATE) * 2)


def _open(server: Any) -> Any:
    manager = _client(server).realtime.connect(model="gpt-realtime")
    conn = manager.__enter__()
    assert conn.recv().type == "session.created"
    conn.session.update(session=SESSION)
    assert conn.recv().type == "session.updated"
    return manager, conn


def _asr_tasks(sim: SimHandle) -> list[dict[str, Any]]:
    return [r for r in sim.requests("asr") if r["path"] == "/api-ws/v1/inference"]


def _settled(sim: SimHandle, check: Callable[[list[dict[str, Any]]], bool]) -> list[dict[str, Any]]:
    """The simulator's ASR tasks once ``check`` holds for them (the gateway closes asynchronously)."""
    deadline = time.monotonic() + 5
    while True:
        tasks = _asr_tasks(sim)
        if check(tasks) or time.monotonic() > deadline:
            return tasks
        time.sleep(0.05)


def test_partials_stream_while_the_user_speaks(server: Any, sim: SimHandle, speech: bytes) -> None:
    manager, conn = _open(server)
    try:
        _speak(conn, _silence(0.3) + speech)
        _append(conn, _silence(0.8))
        events = _until(conn, "conversation.item.input_audio_transcription.completed")
    finally:
        manager.__exit__(None, None, None)
    types = [e.type for e in events]
    assert "error" not in types
    started = events[types.index("input_audio_buffer.speech_started")]
    stopped_at = types.index("input_audio_buffer.speech_stopped")
    committed = events[types.index("input_audio_buffer.committed")]
    completed = events[-1]
    deltas = [e for e in events if e.type == "conversation.item.input_audio_transcription.delta"]
    early = [e for e in deltas if events.index(e) < stopped_at]
    # Partials came while the user was still speaking, before VAD saw the end of the speech.
    assert len(early) >= 2, types
    assert {e.item_id for e in deltas} == {started.item_id} == {committed.item_id, completed.item_id}
    assert all(e.content_index == 0 for e in deltas)
    # Deltas only append: together they are the final transcript, which every partial prefixes.
    assert "".join(e.delta for e in deltas) == completed.transcript == HEARD
    assert HEARD.startswith("".join(e.delta for e in early)) and "".join(e.delta for e in early) != HEARD
    assert completed.usage.type == "duration" and 2.0 < completed.usage.seconds < 4.5
    # One recognition task, streamed (partials sent), 16 kHz, finished cleanly.
    tasks = _settled(sim, lambda t: len(t) == 1 and t[0].get("finished") is True)
    assert len(tasks) == 1 and tasks[0]["finished"] is True and tasks[0]["partials"] >= 2
    assert tasks[0]["body"]["payload"]["parameters"]["sample_rate"] == 16000


def test_clear_mid_speech_closes_the_upstream_stream(server: Any, sim: SimHandle, speech: bytes) -> None:
    manager, conn = _open(server)
    try:
        half = len(speech) // 2 - len(speech) // 2 % 2
        _speak(conn, _silence(0.3) + speech[:half])
        _until(conn, "conversation.item.input_audio_transcription.delta")
        conn.input_audio_buffer.clear()
        _until(conn, "input_audio_buffer.cleared")
        # The abandoned task was closed by the gateway (no finish-task, no result), not left open.
        tasks = _settled(sim, lambda t: len(t) == 1 and t[0].get("closed") is True)
        assert len(tasks) == 1 and tasks[0].get("closed") is True and not tasks[0].get("finished")
        # The session goes on: the next utterance is a new item with its own stream.
        _speak(conn, speech, pace=4.0)
        _append(conn, _silence(0.8))
        events = _until(conn, "conversation.item.input_audio_transcription.completed")
        assert events[-1].transcript == HEARD
        assert len(_settled(sim, lambda t: len(t) == 2 and t[1].get("finished") is True)) == 2
    finally:
        manager.__exit__(None, None, None)


def test_closing_the_session_mid_speech_closes_the_upstream_stream(
    server: Any, sim: SimHandle, speech: bytes
) -> None:
    manager, conn = _open(server)
    try:
        _speak(conn, _silence(0.3) + speech[: len(speech) // 2 // 2 * 2])
        _until(conn, "conversation.item.input_audio_transcription.delta")
    finally:
        manager.__exit__(None, None, None)
    tasks = _settled(sim, lambda t: len(t) == 1 and t[0].get("closed") is True)
    assert len(tasks) == 1 and tasks[0].get("closed") is True and not tasks[0].get("finished")


def test_asr_socket_cut_mid_stream_is_completed_by_the_local_recogniser(
    server: Any, sim: SimHandle, speech: bytes
) -> None:
    # The simulated Paraformer sends task-started and one partial, then drops the connection.
    sim.fault(service="asr", cut_after=2, times=1)
    manager, conn = _open(server)
    try:
        _speak(conn, _silence(0.3) + speech)
        _append(conn, _silence(0.8))
        events = _until(conn, "conversation.item.input_audio_transcription.completed")
    finally:
        manager.__exit__(None, None, None)
    types = [e.type for e in events]
    assert "conversation.item.input_audio_transcription.failed" not in types and "error" not in types
    deltas = [e.delta for e in events if e.type == "conversation.item.input_audio_transcription.delta"]
    assert deltas and HEARD.startswith(deltas[0])  # the one partial heard before the cut
    words = events[-1].transcript.lower()
    assert "store" in words and "open" in words and events[-1].transcript != HEARD  # faster-whisper's
    # The whole utterance was not sent to the cloud again: the target whose stream broke is skipped.
    assert len(_asr_tasks(sim)) == 1


def test_offline_the_committed_turn_is_transcribed_locally(
    gateway_settings: Callable[..., Any], run_gateway: Callable[..., Any], sim: SimHandle, speech: bytes
) -> None:
    server = run_gateway(gateway_settings(dashscope_api_key=None))
    manager, conn = _open(server)
    try:
        _speak(conn, _silence(0.3) + speech, pace=4.0)
        _append(conn, _silence(0.8))
        events = _until(conn, "conversation.item.input_audio_transcription.completed")
    finally:
        manager.__exit__(None, None, None)
    words = events[-1].transcript.lower()
    assert "store" in words and "open" in words
    assert sim.requests("asr") == []


def test_offline_the_transcription_starts_in_the_closing_silence(
    gateway_settings: Callable[..., Any], run_gateway: Callable[..., Any], speech: bytes
) -> None:
    """Offline (no streaming recogniser), Whisper starts on the speech once the closing silence
    has begun: the turn ends at that pause, so the early transcript is the turn's, and Whisper
    is not run again after the commit."""
    import httpx

    server = run_gateway(gateway_settings(dashscope_api_key=None))
    manager, conn = _open(server)
    try:
        _speak(conn, _silence(0.3) + speech, pace=4.0)
        _speak(conn, _silence(1.0), chunk_ms=20)  # real-time silence: the VAD sees it begin
        events = _until(conn, "conversation.item.input_audio_transcription.completed")
    finally:
        manager.__exit__(None, None, None)
    words = events[-1].transcript.lower()
    assert "store" in words and "open" in words
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'talkgate_realtime_early_transcripts_total{outcome="used"} 1.0' in metrics
    whisper = [
        line for line in metrics.splitlines()
        if line.startswith("talkgate_upstream_attempts_total") and "whisper" in line and 'outcome="ok"' in line
    ]  # fmt: skip
    assert whisper and float(whisper[0].rsplit(" ", 1)[1]) == 1.0  # one Whisper run for the turn


def test_one_usage_row_per_spoken_turn(
    saas: Callable[..., Gateway],  # noqa: F811
    database_url: str,  # noqa: F811
    sim: SimHandle,
    speech: bytes,
) -> None:
    sim.control("PUT", "/sim/config", json={"asr_transcript": HEARD}).raise_for_status()
    gw = saas()
    key = gw.create_key(scopes=["realtime"])["key"]
    client = openai.OpenAI(
        base_url=f"{gw.url}/v1",
        websocket_base_url=f"ws://127.0.0.1:{gw.server.port}/v1",
        api_key=key,
        max_retries=0,
    )
    with client.realtime.connect(model="gpt-realtime") as conn:
        session_id = conn.recv().session.id
        conn.session.update(session=SESSION)
        conn.recv()
        _speak(conn, _silence(0.3) + speech, pace=4.0)
        _append(conn, _silence(0.8))
        completed = _until(conn, "conversation.item.input_audio_transcription.completed")[-1]
    deadline = time.monotonic() + 10
    sql = "SELECT request_id, provider, audio_seconds, status FROM usage_records WHERE route = '/v1/realtime'"
    while True:
        assert gw.admin.get("/admin/usage").status_code == 200  # flushes the buffer
        rows = query(database_url, sql)
        if rows or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    time.sleep(0.3)
    assert gw.admin.get("/admin/usage").status_code == 200
    rows = query(database_url, sql)
    assert len(rows) == 1, rows
    request_id, provider, seconds, status = rows[0]
    assert request_id == f"{session_id}:{completed.item_id}" and status == 200
    assert provider == "bailian:paraformer-realtime-v2"
    assert seconds == pytest.approx(completed.usage.seconds, abs=0.01)


def test_no_speech_goes_upstream_once_the_asr_quota_is_used_up(
    saas: Callable[..., Gateway],  # noqa: F811
    sim: SimHandle,
    speech: bytes,
) -> None:
    """The session opened with ASR seconds left; the tenant's other requests spent them. The next
    utterance is refused at its commit, and none of it was streamed to Paraformer meanwhile."""
    sim.control("PUT", "/sim/config", json={"asr_transcript": HEARD}).raise_for_status()
    gw = saas()
    r = gw.admin.post("/admin/tenants", json={"id": "acme", "name": "acme", "quotas": {"asr_seconds": 3}})
    assert r.status_code in (200, 201), r.text
    realtime = gw.create_key("acme", ["realtime"])["key"]
    files = gw.client(gw.create_key("acme", ["asr"])["key"])
    client = openai.OpenAI(
        base_url=f"{gw.url}/v1",
        websocket_base_url=f"ws://127.0.0.1:{gw.server.port}/v1",
        api_key=realtime,
        max_retries=0,
    )
    three_seconds = wav_of(bytes(16000 * 2 * 3), 16000)
    with client.realtime.connect(model="gpt-realtime") as conn:
        conn.recv()
        conn.session.update(session=SESSION)
        conn.recv()
        r = files.post(
            "/v1/audio/transcriptions",
            files={"file": ("all.wav", three_seconds, "audio/wav")},
            data={"model": "default"},
        )
        assert r.status_code == 200, r.text
        assert gw.admin.get("/admin/usage").status_code == 200  # flushes rows and quota counters
        streamed = len(_asr_tasks(sim))
        _speak(conn, _silence(0.3) + speech, pace=4.0)
        _append(conn, _silence(0.8))
        events = _until(conn, "conversation.item.input_audio_transcription.failed")
    assert events[-1].error.code == "insufficient_quota", events[-1]
    assert not [e for e in events if e.type == "conversation.item.input_audio_transcription.delta"]
    time.sleep(0.3)  # a stream opened late would show by now
    assert len(_asr_tasks(sim)) == streamed


class _ScriptedRouter:
    """``transcribe_stream`` yielding scripted texts (the last one final) once the audio has ended."""

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts
        self.heard = b""

    async def transcribe_stream(self, request: Any, audio: Any, ctx: Any) -> Any:
        assert request.audio.sample_rate == 16000
        async for chunk in audio:
            self.heard += chunk
        for text in self.texts[:-1]:
            yield TranscriptPart(text)
        yield TranscriptPart(self.texts[-1], final=True, transcript=Transcript(text=self.texts[-1]))


async def test_deltas_only_append_and_a_revision_is_held_back() -> None:
    sent: list[dict[str, Any]] = []

    async def send(event: dict[str, Any]) -> None:
        sent.append(event)

    router = _ScriptedRouter(["What", "What time", "Where time", "What time is", "What time is it?"])
    live = LiveTranscript("item_1", router=router, send=send)
    for _ in range(10):
        live.feed(bytes(RATE * 2 // 50))  # 20 ms at 24 kHz
    transcript = await live.finish()
    deltas = [e["delta"] for e in sent]
    assert deltas == ["What", " time", " is", " it?"]  # "Where time" revised sent words: not sent
    assert "".join(deltas) == transcript.text == "What time is it?"
    assert {e["type"] for e in sent} == {"conversation.item.input_audio_transcription.delta"}
    assert {e["item_id"] for e in sent} == {"item_1"}
    assert len(router.heard) == 16000 * 2 // 5  # 200 ms resampled to 16 kHz, nothing lost
