"""Speech-like audio for the simulated TTS, with word timestamps that match the samples exactly.

Each word is a voiced buzz (a glottal-like harmonic series at a per-word pitch, shaped by two
formant bumps) under a syllable-rate amplitude envelope, separated by silences; punctuation adds a
longer pause. It is not speech, but it has speech's coarse structure (voicing, syllables, pauses),
so lip-sync, VAD and audio plumbing downstream see realistic input, and its length grows with
the text.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from gateway.sim.text import words_with_spans
from providers.wav import float_to_pcm16

LEAD_MS = 60
WORD_GAP_MS = 70
CLAUSE_PAUSE_MS = 180
TAIL_MS = 120
CJK_WORD_MS = 210
_VOWELS = set("aeiouyAEIOUY")


@dataclass(frozen=True)
class WordTiming:
    text: str
    begin_index: int
    end_index: int
    begin_time: int  # ms from the start of the audio this sentence belongs to
    end_time: int

    def as_cosyvoice(self, offset_ms: int = 0) -> dict[str, object]:
        return {
            "text": self.text,
            "begin_index": self.begin_index,
            "end_index": self.end_index,
            "begin_time": self.begin_time + offset_ms,
            "end_time": self.end_time + offset_ms,
        }


@dataclass
class Speech:
    pcm: np.ndarray  # int16 mono
    sample_rate: int
    words: list[WordTiming]

    @property
    def duration_ms(self) -> int:
        return round(len(self.pcm) * 1000 / self.sample_rate)


def _word_ms(word: str) -> int:
    if len(word) == 1 and ord(word) > 0x2FFF:
        return CJK_WORD_MS
    return min(90 + 55 * len(word), 750)


def _syllables(word: str) -> int:
    if len(word) == 1 and ord(word) > 0x2FFF:
        return 1
    count, previous = 0, False
    for ch in word:
        vowel = ch in _VOWELS
        if vowel and not previous:
            count += 1
        previous = vowel
    return max(count, 1)


def _voiced(word: str, n: int, sample_rate: int) -> np.ndarray:
    """One word's waveform as float32 in [-1, 1]."""
    seed = zlib.crc32(word.casefold().encode())
    f0_start = 105.0 + (seed % 80)  # 105..185 Hz
    f1 = 450.0 + (seed >> 8) % 350
    f2 = 1100.0 + (seed >> 16) % 900
    t = np.arange(n, dtype=np.float32) / sample_rate
    f0 = f0_start * (1.0 - 0.12 * t / max(t[-1], 1e-3))  # falling intonation
    phase = 2.0 * np.pi * np.cumsum(f0) / sample_rate
    wave = np.zeros(n, dtype=np.float32)
    nyquist = sample_rate / 2.0
    for k in range(1, 16):
        freq = k * f0_start
        if freq >= nyquist * 0.9:
            break
        gain = (1.0 / k) * (
            0.3 + np.exp(-(((freq - f1) / 180.0) ** 2)) + 0.7 * np.exp(-(((freq - f2) / 260.0) ** 2))
        )
        wave += gain * np.sin(k * phase).astype(np.float32)
    syllables = _syllables(word)
    envelope = np.abs(np.sin(np.pi * syllables * t / (n / sample_rate))) ** 0.6
    ramp = min(n // 2, int(0.012 * sample_rate))
    if ramp > 0:
        edge = np.linspace(0.0, 1.0, ramp, dtype=np.float32)
        envelope[:ramp] *= edge
        envelope[-ramp:] *= edge[::-1]
    wave *= envelope.astype(np.float32)
    peak = float(np.max(np.abs(wave))) or 1.0
    return wave * (0.55 / peak)


def synthesize(text: str, sample_rate: int, volume: float = 50.0) -> Speech:
    """Audio for ``text`` at ``sample_rate``; timings are relative to the start of the returned audio."""
    spans = words_with_spans(text)
    gain = max(0.0, min(volume, 100.0)) / 50.0
    pieces: list[np.ndarray] = []
    words: list[WordTiming] = []
    cursor = int(LEAD_MS * sample_rate / 1000)
    pieces.append(np.zeros(cursor, dtype=np.float32))
    for i, (word, begin, end) in enumerate(spans):
        n = max(int(_word_ms(word) * sample_rate / 1000), 16)
        pieces.append(_voiced(word, n, sample_rate) * min(gain, 1.6))
        words.append(
            WordTiming(
                text=word,
                begin_index=begin,
                end_index=end,
                begin_time=round(cursor * 1000 / sample_rate),
                end_time=round((cursor + n) * 1000 / sample_rate),
            )
        )
        cursor += n
        next_begin = spans[i + 1][1] if i + 1 < len(spans) else len(text)
        between = text[end:next_begin]
        pause_ms = CLAUSE_PAUSE_MS if any(c in between for c in ",.;:!?，。；：！？、") else WORD_GAP_MS
        if i + 1 == len(spans):
            pause_ms = TAIL_MS
        gap = int(pause_ms * sample_rate / 1000)
        pieces.append(np.zeros(gap, dtype=np.float32))
        cursor += gap
    audio = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
    pcm = float_to_pcm16(audio)
    return Speech(pcm=pcm, sample_rate=sample_rate, words=words)
