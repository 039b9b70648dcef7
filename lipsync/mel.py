"""Wav2Lip's audio front-end in numpy/scipy (no librosa at run time).

The generator was trained on this exact pipeline, so every constant matters:
16 kHz, pre-emphasis 0.97, STFT (n_fft 800, hop 200, Hann window 800, centred with
REFLECT padding), magnitude, Slaney mel (80 bins, 55–7600 Hz, Slaney area norm),
20·log10(max(1e-5, x)) − 20 dB, then symmetric normalisation clipped to ±4.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.signal import lfilter

from providers.wav import resample as resample  # re-exported: lipsync.render imports it here

SAMPLE_RATE = 16000
N_FFT = 800
HOP = 200
WIN = 800
N_MELS = 80
FMIN = 55.0
FMAX = 7600.0
PREEMPHASIS = 0.97
REF_LEVEL_DB = 20.0
MIN_LEVEL_DB = -100.0
MAX_ABS = 4.0
MEL_STEP = 16  # mel columns per video frame window
MEL_FPS = SAMPLE_RATE / HOP  # 80 mel columns per second


# Slaney's mel scale: linear (f / (200/3)) below 1 kHz, logarithmic above.
_SLANEY_HZ_PER_MEL = 200.0 / 3.0
_SLANEY_MIN_LOG_HZ = 1000.0
_SLANEY_MIN_LOG_MEL = _SLANEY_MIN_LOG_HZ / _SLANEY_HZ_PER_MEL
_SLANEY_LOGSTEP = float(np.log(6.4) / 27.0)


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    hz = np.asarray(hz, dtype=np.float64)
    mel = hz / _SLANEY_HZ_PER_MEL
    high = hz >= _SLANEY_MIN_LOG_HZ
    mel[high] = _SLANEY_MIN_LOG_MEL + np.log(hz[high] / _SLANEY_MIN_LOG_HZ) / _SLANEY_LOGSTEP
    return mel


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    hz = mel * _SLANEY_HZ_PER_MEL
    high = mel >= _SLANEY_MIN_LOG_MEL
    hz[high] = _SLANEY_MIN_LOG_HZ * np.exp(_SLANEY_LOGSTEP * (mel[high] - _SLANEY_MIN_LOG_MEL))
    return hz


@lru_cache(maxsize=4)
def mel_filterbank(
    sr: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS, fmin: float = FMIN, fmax: float = FMAX
) -> np.ndarray:
    """(n_mels, 1 + n_fft/2) triangular filters on the Slaney scale, area-normalised."""
    fft_hz = np.linspace(0.0, sr / 2.0, 1 + n_fft // 2)
    edges = _mel_to_hz(
        np.linspace(_hz_to_mel(np.array([fmin]))[0], _hz_to_mel(np.array([fmax]))[0], n_mels + 2)
    )
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_hz[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges[2 : n_mels + 2] - edges[:n_mels]))[:, None]
    weights.setflags(write=False)
    return weights


@lru_cache(maxsize=2)
def _hann(n: int) -> np.ndarray:
    """Periodic Hann window (the FFT-bin convention the STFT uses)."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)


def stft_magnitude(y: np.ndarray, n_fft: int = N_FFT, hop: int = HOP) -> np.ndarray:
    """|STFT| with centred frames, reflect padding; shape (1 + n_fft/2, 1 + len(y)//hop)."""
    pad = n_fft // 2
    mode = "reflect" if y.size > pad else "constant"  # reflect needs more samples than the pad
    padded = np.pad(y, pad, mode=mode)
    n_frames = 1 + (padded.size - n_fft) // hop
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop][:n_frames]
    return np.abs(np.fft.rfft(frames * _hann(n_fft), axis=1)).T


def melspectrogram(signal: np.ndarray) -> np.ndarray:
    """16 kHz mono float signal → normalised log-mel (80, 1 + len//200) in [-4, 4], float32."""
    y = np.asarray(signal, dtype=np.float64)
    if y.ndim != 1:
        raise ValueError("melspectrogram expects a mono 1-D signal")
    if y.size == 0:
        raise ValueError("melspectrogram needs at least one sample")
    y = lfilter([1.0, -PREEMPHASIS], [1.0], y)
    mel = mel_filterbank() @ stft_magnitude(y)
    db = 20.0 * np.log10(np.maximum(1e-5, mel)) - REF_LEVEL_DB
    norm = (2.0 * MAX_ABS) * ((db - MIN_LEVEL_DB) / -MIN_LEVEL_DB) - MAX_ABS
    return np.clip(norm, -MAX_ABS, MAX_ABS).astype(np.float32)


def chunk_starts(n_mel_cols: int, fps: float, n_frames: int | None = None) -> list[int]:
    """Start column of each video frame's 16-column window.

    Reference rule: start = int(i·80/fps); once start+16 passes the end, the last 16
    columns are used and (without ``n_frames``) the sequence stops. With ``n_frames``
    the count is fixed by the caller (so video length equals audio length) and frames past
    the end reuse the last window.
    """
    last = max(0, n_mel_cols - MEL_STEP)
    starts: list[int] = []
    i = 0
    while True:
        start = int(i * MEL_FPS / fps)
        if n_frames is None:
            if start + MEL_STEP > n_mel_cols:
                starts.append(last)
                return starts
            starts.append(start)
        else:
            if i >= n_frames:
                return starts
            starts.append(min(start, last))
        i += 1


def mel_chunks(mel: np.ndarray, fps: float, n_frames: int | None = None) -> np.ndarray:
    """(n_frames, 80, 16) windows, one per video frame; short mels are edge-padded to 16 columns."""
    if mel.shape[1] < MEL_STEP:
        mel = np.pad(mel, ((0, 0), (0, MEL_STEP - mel.shape[1])), mode="edge")
    starts = chunk_starts(mel.shape[1], fps, n_frames)
    return np.stack([mel[:, s : s + MEL_STEP] for s in starts]).astype(np.float32)
