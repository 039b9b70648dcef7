"""The mel front-end against an independent librosa computation, and per-frame chunking."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import lfilter

from lipsync.mel import chunk_starts, mel_chunks, melspectrogram, resample
from providers.wav import pcm16_to_float


def _signal(seconds: float = 1.37, sr: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(0)
    voiced = 0.5 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t)) / 2
    return voiced + 0.1 * np.sin(2 * np.pi * 1800 * t) + 0.01 * rng.standard_normal(t.size)


def _librosa_reference(x: np.ndarray) -> np.ndarray:
    librosa = pytest.importorskip("librosa")
    y = lfilter([1.0, -0.97], [1.0], x)
    spec = np.abs(librosa.stft(y, n_fft=800, hop_length=200, win_length=800, pad_mode="reflect"))
    basis = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600)
    db = 20 * np.log10(np.maximum(1e-5, basis @ spec)) - 20
    return np.clip(8 * (db + 100) / 100 - 4, -4, 4)


@pytest.mark.parametrize("seconds", [1.37, 0.2])
def test_matches_librosa_within_1e4(seconds: float) -> None:
    x = _signal(seconds)
    ref = _librosa_reference(x)
    mine = melspectrogram(x)
    assert mine.shape == ref.shape == (80, 1 + x.size // 200)
    assert mine.dtype == np.float32
    assert np.abs(mine - ref).max() <= 1e-4
    assert mine.min() >= -4 and mine.max() <= 4
    assert ref.max() > 0  # the signal is loud enough that the comparison is not all clipped floor


def test_silence_sits_at_the_floor() -> None:
    assert np.all(melspectrogram(np.zeros(3200)) == -4.0)


def test_reference_chunking_rule_at_25_fps() -> None:
    # start = int(i * 3.2); the first window that would pass the end is replaced by the last 16 columns.
    starts = chunk_starts(40, 25)
    assert starts[:6] == [0, 3, 6, 9, 12, 16]
    assert starts[-1] == 24 and all(s + 16 <= 40 for s in starts)
    assert starts == [0, 3, 6, 9, 12, 16, 19, 22, 24]


def test_fixed_frame_count_repeats_the_last_window() -> None:
    mel = np.arange(80 * 40, dtype=np.float32).reshape(80, 40)
    chunks = mel_chunks(mel, 25, n_frames=12)
    assert chunks.shape == (12, 80, 16)
    assert np.array_equal(chunks[0], mel[:, 0:16])
    assert np.array_equal(chunks[3], mel[:, 9:25])
    assert np.array_equal(chunks[-1], mel[:, 24:40])


def test_short_mel_is_padded_to_one_window() -> None:
    chunks = mel_chunks(np.ones((80, 5), np.float32), 25, n_frames=2)
    assert chunks.shape == (2, 80, 16)


def test_pcm_and_resampling_helpers() -> None:
    pcm = np.array([0, 16384, -32768], dtype="<i2").tobytes()
    assert np.allclose(pcm16_to_float(pcm), [0.0, 0.5, -1.0])
    tone = np.sin(2 * np.pi * 440 * np.arange(22050) / 22050).astype(np.float32)
    out = resample(tone, 22050, 16000)
    assert out.size == 16000
    spectrum = np.abs(np.fft.rfft(out))
    assert abs(int(np.argmax(spectrum)) - 440) <= 1  # 1 Hz bins over one second
