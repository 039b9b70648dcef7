"""Speech synthesis through the official dashscope SDK: CosyVoice (tts_v2), Sambert, qwen-tts."""

from __future__ import annotations

import base64
import io
import itertools
import json
import wave
from typing import Any

import av
import httpx
import numpy as np
import pytest
from dashscope import MultiModalConversation
from dashscope.audio.tts import SpeechSynthesizer as SambertSynthesizer
from dashscope.audio.tts_v2 import AudioFormat, ResultCallback, SpeechSynthesizer
from dashscope.common.error import RequestFailure

from tests.conftest import SimHandle


def _decode(data: bytes) -> tuple[np.ndarray, int]:
    """Decode any container with FFmpeg (PyAV) into mono float samples."""
    with av.open(io.BytesIO(data)) as container:
        frames = [f.to_ndarray().reshape(-1) for f in container.decode(audio=0)]
        rate = container.streams.audio[0].rate
    samples = np.concatenate(frames).astype(np.float64)
    if samples.dtype.kind != "f" or np.abs(samples).max() > 2:
        samples = samples / 32768.0
    return samples, rate


class Collector(ResultCallback):
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.frames: list[bytes] = []
        self.order: list[str] = []
        self.complete = False

    def on_event(self, message: str) -> None:
        event = json.loads(message)
        self.events.append(event)
        self.order.append(event["payload"]["output"]["type"])

    def on_data(self, data: bytes) -> None:
        self.frames.append(bytes(data))
        self.order.append("audio")

    def on_complete(self) -> None:
        self.complete = True


def test_call_returns_decodable_mp3_that_grows_with_text(ds: SimHandle) -> None:
    short = SpeechSynthesizer(
        model="cosyvoice-v2", voice="longxiaochun_v2", format=AudioFormat.MP3_22050HZ_MONO_256KBPS
    )
    audio_short = short.call("Hello there.")
    long = SpeechSynthesizer(
        model="cosyvoice-v2", voice="longxiaochun_v2", format=AudioFormat.MP3_22050HZ_MONO_256KBPS
    )
    audio_long = long.call("Hello there. This sentence is quite a lot longer than the first one.")
    samples_short, rate = _decode(audio_short)
    samples_long, _ = _decode(audio_long)
    assert rate == 22050
    assert 0.5 < len(samples_short) / rate < 2.0
    assert len(samples_long) > 3 * len(samples_short)
    assert np.abs(samples_long).max() > 0.2  # real signal, not silence
    run_task = ds.requests("tts")[0]["body"]
    assert run_task["payload"]["parameters"]["enable_ssml"] is True
    assert ds.requests("tts")[1]["text_chars"] == len(
        "Hello there. This sentence is quite a lot longer than the first one."
    )


def test_call_without_format_gets_the_default_mp3(ds: SimHandle) -> None:
    """The SDK's most common call names no format: it sends "Default" and rate 0 (AudioFormat.DEFAULT);
    Bailian answers in CosyVoice's default format, mp3 at 22050 Hz, and so does the simulator."""
    audio = SpeechSynthesizer(model="cosyvoice-v2", voice="longxiaochun_v2").call("Hello there.")
    samples, rate = _decode(audio)
    assert rate == 22050 and 0.5 < len(samples) / rate < 2.0
    assert np.abs(samples).max() > 0.2
    params = ds.requests("tts")[0]["body"]["payload"]["parameters"]
    assert (params["format"], params["sample_rate"]) == ("Default", 0)


def test_streaming_call_pcm_frames_and_word_timestamps(ds: SimHandle) -> None:
    cb = Collector()
    synth = SpeechSynthesizer(
        model="cosyvoice-v2",
        voice="longxiaochun_v2",
        format=AudioFormat.PCM_16000HZ_MONO_16BIT,
        callback=cb,
        additional_params={"word_timestamp_enabled": True},
    )
    for part in ["Good morning, ", "dear user. How ", "can I help?"]:
        synth.streaming_call(part)
    synth.streaming_complete()
    assert cb.complete
    # every sentence-synthesis event is followed by exactly one binary frame
    for i, kind in enumerate(cb.order):
        if kind == "sentence-synthesis":
            assert cb.order[i + 1] == "audio"
        if kind == "audio":
            assert cb.order[i - 1] == "sentence-synthesis"
    ends = [e["payload"] for e in cb.events if e["payload"]["output"]["type"] == "sentence-end"]
    assert [e["output"]["original_text"] for e in ends] == ["Good morning, dear user.", "How can I help?"]
    pcm = np.frombuffer(b"".join(cb.frames), dtype="<i2").astype(np.float64) / 32768
    words = [w for e in ends for w in e["output"]["sentence"]["words"]]
    assert [w["text"] for w in words] == ["Good", "morning", "dear", "user", "How", "can", "I", "help"]
    assert all(a["end_time"] <= b["begin_time"] for a, b in itertools.pairwise(words))
    assert words[-1]["end_time"] <= len(pcm) / 16000 * 1000
    for w in words:  # voiced inside each word, silent just before it
        inside = pcm[int(w["begin_time"] * 16) : int(w["end_time"] * 16)]
        before = pcm[int(w["begin_time"] * 16) - 400 : int(w["begin_time"] * 16) - 80]
        assert np.sqrt(np.mean(inside**2)) > 0.05
        assert np.abs(before).max() < 1e-3
    assert ends[-1]["usage"]["characters"] == len("Good morning, dear user.") + len("How can I help?")


def test_wav_header_only_on_first_frame(ds: SimHandle) -> None:
    cb = Collector()
    synth = SpeechSynthesizer(
        model="cosyvoice-v2", voice="longxiaochun_v2", format=AudioFormat.WAV_24000HZ_MONO_16BIT, callback=cb
    )
    synth.streaming_call("One sentence here. And another one follows.")
    synth.streaming_complete()
    assert cb.frames[0][:4] == b"RIFF"
    assert all(not f.startswith(b"RIFF") for f in cb.frames[1:])
    with wave.open(io.BytesIO(b"".join(cb.frames))) as w:
        assert w.getframerate() == 24000
        assert len(w.readframes(10**9)) == sum(len(f) for f in cb.frames) - 44


def test_opus_output_decodes(ds: SimHandle) -> None:
    synth = SpeechSynthesizer(
        model="cosyvoice-v2", voice="longxiaochun_v2", format=AudioFormat.OGG_OPUS_16KHZ_MONO_16KBPS
    )
    samples, _rate = _decode(synth.call("Opus works too."))
    assert len(samples) > 0 and np.abs(samples).max() > 0.1


def test_tts_invalid_key_is_handshake_failure(ds: SimHandle) -> None:
    import dashscope

    dashscope.api_key = "sk-invalid"
    synth = SpeechSynthesizer(
        model="cosyvoice-v2", voice="longxiaochun_v2", format=AudioFormat.PCM_16000HZ_MONO_16BIT
    )
    # call() runs this connect step with a fixed 5 s wait; 1 s keeps the test short, same code path.
    with pytest.raises(TimeoutError, match="could not established"):
        synth._SpeechSynthesizer__connect(timeout_seconds=1)  # type: ignore[attr-defined]
    assert ds.requests("ws")[-1]["status"] == 401


def test_tts_task_failed_raises_request_failure(ds: SimHandle) -> None:
    ds.fault(service="tts", status=400, code="InvalidParameter", message="voice not found", times=1)
    synth = SpeechSynthesizer(
        model="cosyvoice-v2", voice="longxiaochun_v2", format=AudioFormat.PCM_16000HZ_MONO_16BIT
    )
    with pytest.raises(RequestFailure) as err:
        synth.call("hello")
    assert (err.value.name, err.value.message, err.value.http_code) == (
        "InvalidParameter",
        "voice not found",
        44,
    )


def test_qwen_tts_plain_url_and_stream(ds: SimHandle) -> None:
    r = MultiModalConversation.call(model="qwen3-tts-flash", text="Hello from qwen tts.", voice="Cherry")
    assert r.status_code == 200, r
    url = r.output.audio["url"]
    assert r.usage["characters"] == len("Hello from qwen tts.")
    wav_bytes = httpx.get(url).content
    with wave.open(io.BytesIO(wav_bytes)) as w:
        assert w.getframerate() == 24000 and w.getnframes() / 24000 > 1.0
    chunks = list(
        MultiModalConversation.call(
            model="qwen3-tts-flash", text="Hello from qwen tts.", voice="Cherry", stream=True
        )
    )
    pcm = b"".join(base64.b64decode(c.output.audio["data"]) for c in chunks if c.output.audio.get("data"))
    assert chunks[-1].output.finish_reason == "stop" and chunks[-1].output.audio["url"].startswith("http")
    with wave.open(io.BytesIO(wav_bytes)) as w:
        assert pcm == w.readframes(w.getnframes())
    assert [i["service"] for i in ds.requests()] == ["tts", "tts"]


def test_sambert_one_way(ds: SimHandle) -> None:
    result = SambertSynthesizer.call(
        model="sambert-zhichu-v1",
        text="今天天气很好。",
        sample_rate=16000,
        format="wav",
        word_timestamp_enabled=True,
    )
    audio = result.get_audio_data()
    assert audio[:4] == b"RIFF"
    samples, rate = _decode(audio)
    assert rate == 16000 and len(samples) / rate > 1.0
    [sentence] = result.get_timestamps()
    assert [w["text"] for w in sentence["words"]] == list("今天天气很好")
    assert result.get_response().status_code == 200


def test_unknown_cosyvoice_voice_fails_the_task_like_bailian(ds: SimHandle) -> None:
    synth = SpeechSynthesizer(
        model="cosyvoice-v2", voice="nonexistent_voice", format=AudioFormat.PCM_16000HZ_MONO_16BIT
    )
    with pytest.raises(RequestFailure) as err:
        synth.call("hello")
    assert err.value.name == "InvalidParameter"
    assert "nonexistent_voice" in err.value.message
    assert ds.requests("tts")[-1]["status"] == 400
    known = SpeechSynthesizer(
        model="cosyvoice-v2", voice="longshu_v2", format=AudioFormat.PCM_16000HZ_MONO_16BIT
    )
    assert len(known.call("hello")) > 1000
