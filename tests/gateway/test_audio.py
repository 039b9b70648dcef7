"""The audio codec (gateway/audio.py) and the /v1/audio routes over scripted providers."""

from __future__ import annotations

import io
import socket

import av
import httpx
import numpy as np
import orjson
import pytest

from gateway.audio import (
    CONTENT_TYPES,
    SPEECH_FORMATS,
    AudioDecodeError,
    StreamEncoder,
    decode_to_pcm,
    wav_stream_header,
)
from tests.gateway import fake_providers
from tests.gateway.fake_providers import FakeGateway
from tests.sounds import sine_pcm, tone_wav

# shared fixtures (a gateway over scripted providers, and an httpx client for it)
client = fake_providers.client
fake_gateway = fake_providers.fake_gateway


def encode_with_pyav(pcm: bytes, rate: int, fmt: str, codec: str) -> bytes:
    """An independent encoder path (a whole file, seekable output) to produce test inputs."""
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as c:
        s = c.add_stream(codec, rate=rate)
        s.layout = "mono"
        frame = av.AudioFrame.from_ndarray(
            np.frombuffer(pcm, "<i2").reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = rate
        for p in s.encode(frame):
            c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    return buf.getvalue()


def dominant_hz(pcm: bytes, rate: int) -> float:
    x = np.frombuffer(pcm, "<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[spectrum.argmax()])


# --------------------------------------------------------------------------- decoding


@pytest.mark.parametrize(
    ("fmt", "codec"),
    [
        ("wav", "pcm_s16le"),
        ("mp3", "libmp3lame"),
        ("ogg", "libopus"),
        ("flac", "flac"),
        ("adts", "aac"),
        ("mp4", "aac"),
    ],
)
def test_decode_any_container_to_16k_mono(fmt: str, codec: str) -> None:
    rate = 48000 if codec == "libopus" else 44100
    data = encode_with_pyav(sine_pcm(1.0, rate, freq=440), rate, fmt, codec)
    audio = decode_to_pcm(data, sample_rate=16000)
    assert audio.sample_rate == 16000
    assert audio.duration_s == pytest.approx(1.0, abs=0.08)
    assert dominant_hz(audio.pcm, 16000) == pytest.approx(440, abs=5)


def test_decode_stereo_is_downmixed() -> None:
    buf = io.BytesIO()
    with av.open(buf, "w", format="wav") as c:
        s = c.add_stream("pcm_s16le", rate=8000)
        s.layout = "stereo"
        left = np.frombuffer(sine_pcm(0.5, 8000, 300), "<i2")
        frame = av.AudioFrame.from_ndarray(
            np.stack([left, left]).T.reshape(1, -1).copy(), format="s16", layout="stereo"
        )
        frame.sample_rate = 8000
        for p in s.encode(frame):
            c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    audio = decode_to_pcm(buf.getvalue(), sample_rate=8000)
    assert audio.duration_s == pytest.approx(0.5, abs=0.01)
    assert dominant_hz(audio.pcm, 8000) == pytest.approx(300, abs=5)


def test_decode_errors_are_clear() -> None:
    with pytest.raises(AudioDecodeError, match="empty"):
        decode_to_pcm(b"")
    with pytest.raises(AudioDecodeError, match="unsupported or corrupt"):
        decode_to_pcm(b"definitely not audio" * 50)


def test_decode_truncated_file_keeps_the_good_part() -> None:
    data = encode_with_pyav(sine_pcm(2.0, 22050), 22050, "mp3", "libmp3lame")
    audio = decode_to_pcm(data[: len(data) // 2])
    assert 0.5 < audio.duration_s < 1.5


# --------------------------------------------------------------------------- encoding


@pytest.mark.parametrize("fmt", ["mp3", "opus", "aac", "flac", "wav"])
def test_stream_encoder_round_trip(fmt: str) -> None:
    rate = 22050
    pcm = sine_pcm(1.5, rate, freq=500)
    enc = StreamEncoder(fmt, rate)
    pieces = [enc.feed(pcm[i : i + 4411]) for i in range(0, len(pcm), 4411)]  # odd-sized pieces
    pieces.append(enc.finish())
    assert sum(1 for p in pieces[:-1] if p) >= 1, "nothing left the encoder before finish()"
    data = b"".join(pieces)
    audio = decode_to_pcm(data, sample_rate=16000)
    assert audio.duration_s == pytest.approx(1.5, abs=0.1)
    assert dominant_hz(audio.pcm, 16000) == pytest.approx(500, abs=8)
    # odd-sized pieces must not shift the samples: the decoded tone stays clean (no broadband noise)
    spectrum = np.abs(np.fft.rfft(np.frombuffer(audio.pcm, "<i2").astype(float)))
    freqs = np.fft.rfftfreq(len(audio.pcm) // 2, 1 / 16000)
    assert spectrum[freqs > 2000].sum() < 0.05 * spectrum.sum()
    with av.open(io.BytesIO(data)) as c:
        assert (
            c.streams.audio[0].codec_context.name
            == {
                "mp3": "mp3float",
                "opus": "opus",
                "aac": "aac",
                "flac": "flac",
                "wav": "pcm_s16le",
            }[fmt]
        )


def test_opus_rate_is_one_libopus_accepts() -> None:
    assert StreamEncoder("opus", 22050).output_rate == 24000
    assert StreamEncoder("opus", 16000).output_rate == 16000
    assert StreamEncoder("mp3", 22050).output_rate == 22050


def test_pcm_is_raw_and_wav_header_is_streamable() -> None:
    pcm = sine_pcm(0.1, 16000)
    enc = StreamEncoder("pcm", 16000)
    assert enc.feed(pcm) + enc.finish() == pcm
    header = wav_stream_header(24000)
    assert len(header) == 44 and header[:4] == b"RIFF" and header[8:16] == b"WAVEfmt "
    assert int.from_bytes(header[24:28], "little") == 24000


def test_every_format_has_a_content_type() -> None:
    assert set(CONTENT_TYPES) == set(SPEECH_FORMATS)


# --------------------------------------------------------------------------- /v1/audio/transcriptions


def post_wav(client: httpx.Client, **fields: str) -> httpx.Response:
    files = {"file": ("clip.wav", tone_wav(seconds=1.2, rate=44100), "audio/wav")}
    return client.post("/v1/audio/transcriptions", files=files, data={"model": "whisper-1", **fields})


def test_transcription_json(client: httpx.Client, fake_gateway: FakeGateway) -> None:
    r = post_wav(client, language="en", prompt="greeting")
    assert r.status_code == 200, r.text
    assert r.json() == {"text": "hello world"}
    sent = fake_gateway.provider("asr").calls[-1]
    assert sent.audio.sample_rate == 16000
    assert sent.audio.duration_s == pytest.approx(1.2, abs=0.02)
    assert (sent.language, sent.prompt) == ("en", "greeting")


def test_transcription_text(client: httpx.Client) -> None:
    r = post_wav(client, response_format="text")
    assert r.headers["content-type"].startswith("text/plain")
    assert r.text == "hello world\n"


def test_transcription_verbose_json_with_words(client: httpx.Client) -> None:
    r = client.post(
        "/v1/audio/transcriptions",
        files={"file": ("clip.wav", tone_wav(seconds=1.2))},
        data={
            "model": "whisper-1",
            "response_format": "verbose_json",
            "timestamp_granularities[]": ["word", "segment"],
        },
    )
    body = orjson.loads(r.content)
    assert body["task"] == "transcribe" and body["language"] == "en"
    assert body["duration"] == pytest.approx(1.2, abs=0.01)
    assert body["text"] == "hello world"
    assert [s["text"] for s in body["segments"]] == ["hello world"]
    assert body["segments"][0]["end"] == pytest.approx(1.2, abs=0.01)
    assert [w["word"] for w in body["words"]] == ["hello", "world"]
    assert body["words"][1]["start"] == pytest.approx(0.6, abs=0.01)


def test_transcription_verbose_json_default_has_segments_not_words(client: httpx.Client) -> None:
    body = post_wav(client, response_format="verbose_json").json()
    assert "segments" in body and "words" not in body


def test_transcription_srt_and_vtt(client: httpx.Client) -> None:
    srt = post_wav(client, response_format="srt").text
    assert srt == "1\n00:00:00,000 --> 00:00:01,200\nhello world\n"
    r = post_wav(client, response_format="vtt")
    assert r.headers["content-type"].startswith("text/vtt")
    assert r.text == "WEBVTT\n\n00:00:00.000 --> 00:00:01.200\nhello world\n"


def test_transcription_decodes_compressed_uploads(client: httpx.Client, fake_gateway: FakeGateway) -> None:
    mp3 = encode_with_pyav(sine_pcm(2.0, 22050), 22050, "mp3", "libmp3lame")
    r = client.post("/v1/audio/transcriptions", files={"file": ("x.mp3", mp3)}, data={"model": "whisper-1"})
    assert r.status_code == 200
    assert fake_gateway.provider("asr").calls[-1].audio.duration_s == pytest.approx(2.0, abs=0.1)


# --------------------------------------------------------------------------- /v1/audio/speech


@pytest.mark.parametrize("fmt", SPEECH_FORMATS)
def test_speech_formats(client: httpx.Client, fmt: str) -> None:
    r = client.post(
        "/v1/audio/speech",
        json={"model": "tts-1", "input": "hello", "voice": "alloy", "response_format": fmt},
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == CONTENT_TYPES[fmt]
    assert r.headers.get("transfer-encoding") == "chunked"  # streamed, not buffered
    rate = int(r.headers["x-talkgate-sample-rate"])
    if fmt == "pcm":
        assert rate == 22050
        assert len(r.content) == 4 * int(0.25 * 22050) * 2  # four pieces of raw s16le
        return
    audio = decode_to_pcm(r.content, sample_rate=16000)
    assert audio.duration_s == pytest.approx(1.0, abs=0.1)


def test_speech_maps_openai_voice_and_speed(client: httpx.Client, fake_gateway: FakeGateway) -> None:
    client.post("/v1/audio/speech", json={"model": "tts-1", "input": "hi", "voice": "nova", "speed": 1.5})
    sent = fake_gateway.provider("tts").calls[-1]
    assert sent.voice == "longxiaochun_v2"
    assert sent.speed == 1.5
    assert sent.model == "cosyvoice-v2"
    client.post("/v1/audio/speech", json={"model": "tts-1", "input": "hi", "voice": "longshu_v2"})
    assert fake_gateway.provider("tts").calls[-1].voice == "longshu_v2"  # a native voice passes through


def test_speech_broken_mid_stream_is_not_a_clean_end(fake_gateway: FakeGateway) -> None:
    """The body is aborted: the client sees a transfer error, never a short but 'complete' file."""
    with httpx.Client(base_url=fake_gateway.url) as c:
        with pytest.raises(httpx.RemoteProtocolError):
            c.post(
                "/v1/audio/speech", json={"model": "tts-1", "input": "x [break]", "response_format": "wav"}
            )
        # and the server is fine afterwards
        ok = c.post("/v1/audio/speech", json={"model": "tts-1", "input": "ok", "response_format": "wav"})
        assert ok.status_code == 200


def test_speech_first_bytes_leave_before_synthesis_ends(fake_gateway: FakeGateway) -> None:
    """With a raw socket: the WAV header arrives in the first body chunk, ahead of the final one."""
    host, port = fake_gateway.url.removeprefix("http://").split(":")
    body = orjson.dumps({"model": "tts-1", "input": "hello", "response_format": "wav"})
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/audio/speech HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            + b"content-length: %d\r\n\r\n" % len(body)
            + body
        )
        data = b""
        while b"0\r\n\r\n" not in data[-7:]:
            more = sock.recv(65536)
            if not more:
                break
            data += more
    head, _, chunked = data.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    size_line, _, rest = chunked.partition(b"\r\n")
    assert rest.startswith(b"RIFF")
    assert int(size_line, 16) < 4 * int(0.25 * 22050) * 2  # the first chunk is one piece, not all
