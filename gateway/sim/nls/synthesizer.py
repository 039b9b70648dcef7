"""``SpeechSynthesizer`` / ``SpeechLongSynthesizer`` task (reference §5): one ``StartSynthesis``.

No "SynthesisStarted" in this namespace: the audio follows the Start directive in binary frames of
about ``FRAME_S``, then ``MetaInfo`` (with ``enable_subtitle``), then ``SynthesisCompleted``. The
audio is the simulator's deterministic speech (``gateway/sim/voice.py``) encoded by
``gateway/sim/audio_codec.py``; text beyond 300 characters is cut, as NLS does.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from gateway.sim.audio_codec import StreamEncoder
from gateway.sim.http_common import sleep_ms
from gateway.sim.nls.conn import NlsConn
from gateway.sim.nls.wire import NlsFailure
from gateway.sim.state import SimState
from gateway.sim.text import strip_markup
from gateway.sim.voice import synthesize

FORMATS = ("pcm", "wav", "mp3")
SAMPLE_RATES = (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000)
MAX_TEXT_CHARS = 300
FRAME_S = 0.2


def int_in(payload: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = payload.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise NlsFailure(40000003, f"Parameter '{name}' must be an integer in [{low}, {high}]!")
    return value


def speech_params(
    payload: dict[str, Any], default_voice: str, volume_name: str = "volume"
) -> tuple[str, int, int]:
    """(format, sample rate, volume) of a synthesis payload, checked as the NLS gateway checks
    them (voice, speech and pitch rates too); shared by SpeechSynthesizer and FlowingSpeechSynthesizer."""
    voice = payload.get("voice", default_voice)
    if not isinstance(voice, str) or not voice:
        raise NlsFailure(40000003, "Parameter 'voice' is invalid!")
    fmt = str(payload.get("format") or "pcm").lower()
    if fmt not in FORMATS:
        raise NlsFailure(40000003, f"Invalid format '{fmt[:32]}'!")
    rate = payload.get("sample_rate", 16000)
    if rate not in SAMPLE_RATES or isinstance(rate, bool):
        raise NlsFailure(40000003, f"Invalid sample_rate '{str(rate)[:16]}'!")
    volume = int_in(payload, volume_name, 50, 0, 100)
    int_in(payload, "speech_rate", 0, -500, 500)
    int_in(payload, "pitch_rate", 0, -500, 500)
    return fmt, int(rate), volume


class SynthesizerTask:
    stop_name = ""

    def __init__(self, conn: NlsConn, state: SimState, payload: dict[str, Any], item: dict[str, Any]) -> None:
        self.conn, self.state, self.item = conn, state, item
        text = payload.get("text")
        if not isinstance(text, str) or not text.strip():
            raise NlsFailure(40000003, "Parameter 'text' is missing or empty!")
        self.text = text[:MAX_TEXT_CHARS]
        self.format, self.sample_rate, self.volume = speech_params(payload, "xiaoyun")
        self.subtitles = payload.get("enable_subtitle") is True
        item["text_chars"] = len(self.text)

    async def on_audio(self, data: bytes) -> None:
        raise NlsFailure(40000002, "Can't process binary message in a synthesis task!")

    async def stop(self) -> None:  # pragma: no cover - the gateway never routes a Stop here
        raise NlsFailure(40000002, "StopSynthesis is not accepted in this namespace!")

    def _frames(self, pcm: np.ndarray) -> list[bytes]:
        encoder = StreamEncoder(self.format, self.sample_rate)
        step = max(int(self.sample_rate * FRAME_S), 1)
        frames = [encoder.encode(pcm[i : i + step]) for i in range(0, len(pcm), step)]
        frames.append(encoder.finish())
        return [f for f in frames if f]

    async def start(self) -> bool:
        speech = await asyncio.to_thread(synthesize, strip_markup(self.text), self.sample_rate, self.volume)
        frames = await asyncio.to_thread(self._frames, speech.pcm)
        config = self.state.config
        for i, frame in enumerate(frames):
            await sleep_ms(config.tts_first_chunk_ms if i == 0 else config.tts_chunk_delay_ms)
            await self.conn.audio(frame)
        if self.subtitles:
            sentence = {
                "text": self.text,
                "begin_time": 0,
                "end_time": speech.duration_ms,
                "phoneme": "null",
                "begin_index": 0,
                "end_index": len(self.text),
                "sentence": True,
            }
            words = [
                {
                    "text": w.text,
                    "begin_time": w.begin_time,
                    "end_time": w.end_time,
                    "phoneme": "null",
                    "begin_index": w.begin_index,
                    "end_index": w.end_index,
                    "sentence": False,
                }
                for w in speech.words
            ]
            await self.conn.event("MetaInfo", {"subtitles": [sentence, *words]})
        await self.conn.event("SynthesisCompleted")
        return True
