"""Speech recognition through the official dashscope SDK: Paraformer WebSocket and qwen3-asr-flash."""

from __future__ import annotations

import base64
import io
import threading
import time
from typing import Any

import numpy as np
from dashscope import MultiModalConversation
from dashscope.audio.asr import Recognition, RecognitionCallback, RecognitionResult

from gateway.sim.audio_codec import wav_file
from tests.conftest import SimHandle
from tests.sounds import sine_samples

RATE = 16000


def _tone(seconds: float) -> np.ndarray:
    return sine_samples(seconds, RATE, freq=220, peak=8000)


class Collector(RecognitionCallback):
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.opened = self.completed = self.closed = False
        self.errors: list[Any] = []
        self.done = threading.Event()

    def on_open(self) -> None:
        self.opened = True

    def on_event(self, result: RecognitionResult) -> None:
        self.events.append(dict(result.get_sentence()))

    def on_complete(self) -> None:
        self.completed = True

    def on_error(self, result: Any) -> None:
        self.errors.append(result)

    def on_close(self) -> None:
        self.closed = True
        self.done.set()


def _stream(pcm: np.ndarray, callback: Collector, **kw: Any) -> Recognition:
    rec = Recognition(model="paraformer-realtime-v2", format="pcm", sample_rate=RATE, callback=callback, **kw)
    rec.start()
    data = pcm.tobytes()
    for i in range(0, len(data), 3200):  # 100 ms frames
        rec.send_audio_frame(data[i : i + 3200])
        # A little pacing, as real clients stream: partials can then arrive while audio is still being sent.
        time.sleep(0.01)
    rec.stop()
    return rec


def test_recognition_stream_partials_then_finals(ds: SimHandle) -> None:
    transcript = "Hello world. How are you today?"
    ds.control("PUT", "/sim/config", json={"asr_transcript": transcript})
    cb = Collector()
    _stream(_tone(2.0), cb, language_hints=["en"])
    assert cb.opened and cb.completed and not cb.errors
    partials = [e for e in cb.events if not RecognitionResult.is_sentence_end(e)]
    finals = [e for e in cb.events if RecognitionResult.is_sentence_end(e)]
    assert partials, f"expected partial results with end_time null: {cb.events} {ds.requests()}"
    assert all(p["end_time"] is None for p in partials)
    assert [f["text"] for f in finals] == ["Hello world.", "How are you today?"]
    assert (
        finals[0]["begin_time"]
        < finals[0]["end_time"]
        <= finals[1]["begin_time"]
        < finals[1]["end_time"]
        <= 2000
    )
    assert [w["text"] for w in finals[1]["words"]] == ["How", "are", "you", "today"]
    assert finals[1]["words"][-1]["punctuation"] == "?"
    [item] = ds.requests("asr")
    assert item["audio_bytes"] == 2 * RATE * 2
    assert item["body"]["payload"]["parameters"]["language_hints"] == ["en"]


def test_recognition_default_transcript_depends_on_audio(ds: SimHandle) -> None:
    cb = Collector()
    _stream(_tone(1.0), cb)
    finals = [e for e in cb.events if RecognitionResult.is_sentence_end(e)]
    assert [f["text"] for f in finals] == ["This is a simulated transcript of 1.0 seconds of audio."]
    assert finals[0]["end_time"] <= 1000


def test_recognition_task_failed_from_fault(ds: SimHandle) -> None:
    ds.fault(service="asr", status=500, code="InternalError.Algo", times=1)
    cb = Collector()
    rec = Recognition(model="paraformer-realtime-v2", format="pcm", sample_rate=RATE, callback=cb)
    rec.start()
    assert cb.done.wait(5)
    assert cb.errors and cb.errors[0].code == "InternalError.Algo"
    assert not cb.completed
    assert ds.requests("asr")[0]["fault"] is not None


def test_recognition_invalid_key_rejected_at_handshake(ds: SimHandle) -> None:
    import dashscope

    dashscope.api_key = "sk-invalid"
    cb = Collector()
    rec = Recognition(model="paraformer-realtime-v2", format="pcm", sample_rate=RATE, callback=cb)
    rec.start()  # the SDK reports the refused handshake through on_error, not by raising
    assert cb.done.wait(5)
    [error] = cb.errors
    assert (error.status_code, error.code) == (401, 401)
    assert error.message == "Unauthorized, your api-key is invalid!"
    assert not cb.completed
    assert ds.requests("ws")[-1]["status"] == 401


def test_qwen3_asr_flash_with_data_url(ds: SimHandle) -> None:
    ds.control("PUT", "/sim/config", json={"asr_transcript": "Welcome to the simulator."})
    wav = wav_file(_tone(1.5), RATE)
    data_url = "data:audio/wav;base64," + base64.b64encode(wav).decode()
    messages = [
        {"role": "system", "content": [{"text": ""}]},
        {"role": "user", "content": [{"audio": data_url}]},
    ]
    r = MultiModalConversation.call(
        model="qwen3-asr-flash", messages=messages, asr_options={"enable_itn": False}
    )
    assert r.status_code == 200, r
    assert r.output.choices[0].message.content[0]["text"] == "Welcome to the simulator."
    assert r.usage["seconds"] == 2
    [item] = ds.requests("asr")
    audio = item["body"]["input"]["messages"][1]["content"][0]["audio"]
    assert audio.startswith("data:audio/wav;base64,<") and "elided" in audio
    assert len(io.BytesIO(wav).getvalue()) > 40000


def test_qwen3_asr_flash_rejects_garbage_audio(ds: SimHandle) -> None:
    messages = [
        {
            "role": "user",
            "content": [{"audio": "data:audio/mp3;base64," + base64.b64encode(b"x" * 300).decode()}],
        }
    ]
    r = MultiModalConversation.call(model="qwen3-asr-flash", messages=messages)
    assert r.status_code == 415 and r.code == "BadRequest.UnsupportedFileFormat"
