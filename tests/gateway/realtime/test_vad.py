"""Server VAD of /v1/realtime: the detector on synthetic and real speech, then end to end
(automatic commit and response, barge-in, conversation.item.truncate) against the simulator."""

from __future__ import annotations

import base64
import time
from typing import Any

import numpy as np
import pytest

from gateway.realtime.vad import SpeechDetector
from providers.wav import float_to_pcm16, resample
from tests.conftest import SimHandle
from tests.gateway.realtime.test_realtime import LONG, _client, _until, server  # noqa: F401
from tests.sounds import piper_speech, speechlike

RATE = 24000


def _speech(text: str = "What time does the store open tomorrow?") -> bytes:
    signal, rate = piper_speech(text)
    return float_to_pcm16(resample(signal, rate, RATE)).tobytes()


def _silence(seconds: float) -> bytes:
    return bytes(int(seconds * RATE) * 2)


def _feed(detector: SpeechDetector, pcm: bytes, chunk_ms: int = 40) -> list[tuple[str, int]]:
    step = RATE * 2 * chunk_ms // 1000
    events = []
    for start in range(0, len(pcm), step):
        events += detector.feed(pcm[start : start + step])
    return events


@pytest.mark.parametrize("silero", [True, False])
def test_silence_gives_no_events(silero: bool) -> None:
    noise = (np.random.default_rng(1).normal(0, 30, RATE * 2)).astype("<i2").tobytes()  # -60 dBFS
    assert _feed(SpeechDetector(use_silero=silero), _silence(1.0) + noise) == []


@pytest.mark.parametrize("silero", [True, False])
def test_speech_starts_then_stops_after_the_silence(silero: bool) -> None:
    # Silero on real speech; the energy detector on the speech-like tone bursts (piper's
    # pauses between words are quiet enough to end a turn by energy alone).
    speech = _speech() if silero else float_to_pcm16(speechlike(0.9, RATE)).tobytes()
    detector = SpeechDetector(prefix_padding_ms=300, silence_duration_ms=500, use_silero=silero)
    events = _feed(detector, _silence(0.5) + speech + _silence(0.2))
    assert [e[0] for e in events] == ["speech_started"]
    assert 0 <= events[0][1] <= 500  # speech begins at 500 ms; the start includes the padding
    events = _feed(detector, _silence(0.6))
    assert [e[0] for e in events] == ["speech_stopped"]
    speech_ms = len(speech) * 1000 // (RATE * 2)
    assert 500 + speech_ms - 400 <= events[0][1] <= 500 + speech_ms + 100
    assert _feed(detector, _silence(1.0)) == []


def _stream(conn: Any, pcm: bytes, chunk_ms: int = 100) -> None:
    step = RATE * 2 * chunk_ms // 1000
    for start in range(0, len(pcm), step):
        conn.input_audio_buffer.append(audio=base64.b64encode(pcm[start : start + step]).decode())


VAD = {"type": "server_vad", "silence_duration_ms": 500}


def test_server_vad_commits_and_answers(server: Any, sim: SimHandle) -> None:  # noqa: F811
    with _client(server).realtime.connect(model="gpt-realtime") as conn:
        conn.recv()
        conn.session.update(
            session={
                "type": "realtime",
                "output_modalities": ["text"],
                "audio": {"input": {"turn_detection": VAD}},
            }
        )
        updated = conn.recv()
        assert updated.type == "session.updated"
        vad = updated.session.audio.input.turn_detection
        assert vad.type == "server_vad" and vad.threshold == 0.5 and vad.prefix_padding_ms == 300
        _stream(conn, _speech() + _silence(0.8))
        events = _until(conn, "response.done")
        types = [e.type for e in events]
        assert "error" not in types
        started, stopped, committed = (
            events[types.index(t)]
            for t in (
                "input_audio_buffer.speech_started",
                "input_audio_buffer.speech_stopped",
                "input_audio_buffer.committed",
            )
        )
        assert types.index(started.type) < types.index(stopped.type) < types.index(committed.type)
        assert started.item_id == stopped.item_id == committed.item_id
        assert stopped.audio_end_ms > started.audio_start_ms
        heard = events[types.index("conversation.item.input_audio_transcription.completed")]
        assert heard.item_id == committed.item_id and heard.transcript
        assert types.index("response.created") > types.index(committed.type)
        assert events[-1].response.status == "completed"
        assert sim.requests("asr")


def test_barge_in_cancels_the_response_and_truncate(server: Any, sim: SimHandle) -> None:  # noqa: F811
    sim.control("PUT", "/sim/config", json={"token_delay_ms": 50}).raise_for_status()
    with _client(server).realtime.connect(model="gpt-realtime") as conn:
        conn.recv()
        conn.session.update(session={"type": "realtime", "audio": {"input": {"turn_detection": VAD}}})
        assert conn.recv().type == "session.updated"
        conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": LONG * 3}]}
        )
        _until(conn, "conversation.item.done")
        conn.response.create()
        first = _until(conn, "response.output_audio.delta")
        item_id = next(e.item.id for e in first if e.type == "response.output_item.added")
        _stream(conn, _speech())
        events = _until(conn, "input_audio_buffer.speech_started")
        heard_at = time.monotonic()
        events = _until(conn, "response.done")
        cancelled_after = time.monotonic() - heard_at
        done = events[-1].response
        assert done.status == "cancelled" and done.status_details.reason == "turn_detected"
        # Cancelled at once (bench/realtime.py measures how fast), not after the answer ran out.
        assert cancelled_after < 1.0, cancelled_after
        time.sleep(0.6)  # past the HTTP pool's 0.25 s drain: the upstream stream is closed
        generation = sim.requests("generation")[-1]
        assert generation["finished"] is False, generation
        assert 0 < generation["pieces_sent"] < generation["pieces"]

        # (the new speech's partial transcripts keep arriving meanwhile: skipped here)
        conn.conversation.item.truncate(item_id=item_id, content_index=0, audio_end_ms=10**7)
        assert _reply(conn).error.param == "audio_end_ms"
        conn.conversation.item.truncate(item_id=item_id, content_index=0, audio_end_ms=50)
        truncated = _reply(conn)
        assert truncated.type == "conversation.item.truncated" and truncated.audio_end_ms == 50
        conn.conversation.item.truncate(item_id="item_nope", content_index=0, audio_end_ms=0)
        assert _reply(conn).error.code == "item_not_found"


def _reply(conn: Any) -> Any:
    """The next event that is not a partial transcript of the speech in progress."""
    while (event := conn.recv()).type == "conversation.item.input_audio_transcription.delta":
        pass
    return event
