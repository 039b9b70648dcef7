"""The shared WAV / PCM helpers (providers/wav.py), checked against the standard library."""

from __future__ import annotations

import io
import wave

import numpy as np
import pytest

from providers.wav import (
    float_to_pcm16,
    pcm16_to_float,
    pcm_to_wav,
    read_wav,
    wav_duration,
    wav_header,
)
from tests.sounds import sine_pcm, wav_of


def test_pcm_to_wav_matches_the_standard_library_byte_for_byte() -> None:
    pcm = sine_pcm(0.3, 22050)
    ours = pcm_to_wav(pcm, 22050)
    assert ours == wav_of(pcm, 22050)
    with wave.open(io.BytesIO(ours)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 22050)
        assert w.readframes(w.getnframes()) == pcm


def test_stream_header_is_open_ended_and_measures_what_arrived() -> None:
    header = wav_header(24000)
    assert len(header) == 44 and header[4:8] == header[40:44] == b"\xff\xff\xff\xff"
    assert wav_header(8000, None, channels=2)[22:24] == b"\x02\x00"
    assert wav_duration(header) == 0
    assert wav_duration(header + b"\x00" * 48000) == pytest.approx(1.0)  # 24 kHz s16 mono
    assert wav_duration(pcm_to_wav(b"\x00" * 3200, 16000)) == pytest.approx(0.1)
    assert wav_duration(b"not a wav at all") is None


def test_read_wav_downmixes_stereo_and_rejects_what_it_cannot_read() -> None:
    stereo = wav_of(np.array([[100, 300], [-50, -150]], dtype="<i2").tobytes(), 8000, channels=2)
    mono, rate = read_wav(stereo)
    assert rate == 8000 and np.frombuffer(mono, "<i2").tolist() == [200, -100]
    with pytest.raises(ValueError, match="not a WAV"):
        read_wav(b"RIFF....junk")
    with pytest.raises(ValueError, match="8-bit"):
        read_wav(wav_of(b"\x80" * 10, 8000, width=1))


def test_float_and_pcm16_conversions_clip_instead_of_wrapping() -> None:
    pcm = float_to_pcm16(np.array([0.0, 0.5, -1.0, 1.0, 3.0, -3.0], dtype=np.float32))
    assert pcm.tolist() == [0, 16383, -32767, 32767, 32767, -32767]
    back = pcm16_to_float(pcm.tobytes())
    assert back.dtype == np.float32 and back[1] == pytest.approx(0.5, abs=1e-4)
    assert pcm16_to_float(np.array([-32768], dtype="<i2"))[0] == -1.0
