"""Speech synthesis tasks over the WebSocket: CosyVoice duplex and Sambert one-way (reference §5.1-5.2).

CosyVoice buffers continue-task text and speaks each complete sentence as soon as it has one:
sentence-begin, then per ~200 ms of audio a sentence-synthesis event followed by exactly one binary
frame, then sentence-end. Word times are in ms from the start of the task's audio. Only the first
frame of a wav stream carries the header; mp3/opus are one continuous encoded stream per task.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from gateway.dashscope.ws_task import Conn, TaskFailed
from gateway.sim.audio_codec import StreamEncoder, check_format
from gateway.sim.http_common import sleep_ms
from gateway.sim.models import COSYVOICE_VOICES
from gateway.sim.state import SimState
from gateway.sim.text import split_sentences, strip_markup
from gateway.sim.voice import Speech, WordTiming, synthesize
from gateway.sim.voice_enrollment import is_enrolled, synthesis_refusal

FRAME_S = 0.2
#: CosyVoice's own format when the client names none: ``SpeechSynthesizer(model, voice)`` with no
#: ``format`` sends ``"format": "Default", "sample_rate": 0`` and Bailian answers mp3 at 22050 Hz.
DEFAULT_FORMAT, DEFAULT_RATE = "mp3", 22050
MAX_CONTINUE_CHARS = 20_000
MAX_TOTAL_CHARS = 200_000


def _number(params: dict[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = params.get(name, default)
    if value is None:
        return default
    if not isinstance(value, int | float) or isinstance(value, bool) or not low <= value <= high:
        raise TaskFailed("InvalidParameter", f"{name} must be a number in [{low:g}, {high:g}]")
    return float(value)


class _Speaker:
    """Shared TTS state: format, encoder, running audio clock and character usage."""

    def __init__(self, conn: Conn, state: SimState, params: dict[str, Any], item: dict[str, Any]) -> None:
        self.conn, self.state, self.item = conn, state, item
        self.format = str(params.get("format") or DEFAULT_FORMAT).lower()
        if self.format == "default":  # AudioFormat.DEFAULT: the SDK sends "Default" and rate 0
            self.format = DEFAULT_FORMAT
        rate = params.get("sample_rate") or DEFAULT_RATE
        if not isinstance(rate, int) or isinstance(rate, bool):
            raise TaskFailed("InvalidParameter", "sample_rate must be an integer")
        problem = check_format(self.format, rate)
        if problem:
            raise TaskFailed("InvalidParameter", problem)
        self.sample_rate = rate
        self.volume = _number(params, "volume", 50, 0, 100)
        bit_rate = params.get("bit_rate")
        if bit_rate is not None and (
            not isinstance(bit_rate, int) or isinstance(bit_rate, bool) or not 6 <= bit_rate <= 510
        ):
            # Bounded like the service (opus 6-510 kbps); an absurd value would overflow the encoder.
            raise TaskFailed("InvalidParameter", "bit_rate must be an integer in [6, 510] (kbps)")
        self.encoder = StreamEncoder(self.format, rate, bit_rate * 1000 if bit_rate else None)
        self.word_timestamps = params.get("word_timestamp_enabled") is True
        self.samples_out = 0  # audio clock, in samples, across the whole task
        self.characters = 0
        self.frames_sent = 0

    @property
    def clock_ms(self) -> int:
        return round(self.samples_out * 1000 / self.sample_rate)

    async def render(self, text: str) -> tuple[Speech, int]:
        """Synthesize off the event loop; returns the speech and its start offset in ms."""
        speech = await asyncio.to_thread(synthesize, strip_markup(text), self.sample_rate, self.volume)
        offset = self.clock_ms
        self.samples_out += len(speech.pcm)
        self.characters += len(text)
        self.item["text_chars"] = self.characters
        return speech, offset

    def encode_frames(self, pcm: np.ndarray, last: bool) -> list[tuple[bytes, int]]:
        """(encoded bytes, sample count covered) per ~FRAME_S chunk; empty encoder output is merged."""
        step = max(int(self.sample_rate * FRAME_S), 1)
        frames: list[tuple[bytes, int]] = []
        pending, covered = b"", 0
        for start in range(0, len(pcm), step):
            chunk = pcm[start : start + step]
            pending += self.encoder.encode(chunk)
            covered = start + len(chunk)
            if pending:
                frames.append((pending, covered))
                pending = b""
        if last:
            pending += self.encoder.finish()
        if pending:
            if frames:
                frames[-1] = (frames[-1][0] + pending, len(pcm))
            else:
                frames.append((pending, len(pcm)))
        return frames

    async def pace(self) -> None:
        config = self.state.config
        await sleep_ms(config.tts_first_chunk_ms if self.frames_sent == 0 else config.tts_chunk_delay_ms)
        self.frames_sent += 1

    def words(
        self, timings: list[WordTiming], offset: int, until_ms: int | None = None
    ) -> list[dict[str, Any]]:
        if not self.word_timestamps:
            return []
        return [w.as_cosyvoice(offset) for w in timings if until_ms is None or w.begin_time < until_ms]


class CosyVoiceTask:
    """Duplex CosyVoice: run-task / continue-task(text) / finish-task."""

    def __init__(
        self,
        conn: Conn,
        state: SimState,
        payload: dict[str, Any],
        params: dict[str, Any],
        item: dict[str, Any],
    ) -> None:
        voice = params.get("voice")
        # isinstance first: a list or object here is unhashable and would crash the set lookup.
        if isinstance(voice, str) and (refusal := synthesis_refusal(state, voice, payload.get("model"))):
            raise TaskFailed("InvalidParameter", refusal)
        if not isinstance(voice, str) or (voice not in COSYVOICE_VOICES and not is_enrolled(state, voice)):
            raise TaskFailed(
                "InvalidParameter",
                f"voice '{str(voice)[:64]}' is not a supported voice of {payload.get('model')}"
                if voice
                else "parameters.voice is required",
            )
        self.speaker = _Speaker(conn, state, params, item)
        self.conn = conn
        self.ssml = params.get("enable_ssml") is True
        self.buffer = ""
        self.received = 0
        self.continues = 0
        self.index = 0
        self.last_words: list[dict[str, Any]] = []

    async def start(self) -> bool:
        return False

    async def on_audio(self, data: bytes) -> None:
        raise TaskFailed("InvalidParameter", "binary frames are not accepted by a tts task")

    async def close(self) -> None:
        return None

    async def on_message(self, message: dict[str, Any]) -> bool:
        payload = message.get("payload") if isinstance(message.get("payload"), dict) else {}
        data = payload.get("input") if isinstance(payload.get("input"), dict) else {}
        if message["header"]["action"] == "finish-task":
            if data.get("directive") == "cancel":
                self.buffer = ""
            else:
                await self._speak_buffer(final=True)
            await self._finish()
            return True
        text = data.get("text")
        if isinstance(text, str) and text:
            self.continues += 1
            if self.ssml and self.continues > 1:
                raise TaskFailed(
                    "InvalidParameter", "only one continue-task is allowed when enable_ssml is true"
                )
            if len(text) > MAX_CONTINUE_CHARS or self.received + len(text) > MAX_TOTAL_CHARS:
                raise TaskFailed("InvalidParameter", "text is too long")
            self.received += len(text)
            self.buffer += text
        await self._speak_buffer(final=data.get("flush") is True)
        return False

    async def _speak_buffer(self, final: bool) -> None:
        if self.ssml:  # SSML is one document: speak it whole at the end
            if not final:
                return
            sentences, self.buffer = ([self.buffer.strip()] if self.buffer.strip() else []), ""
        else:
            sentences, self.buffer = split_sentences(self.buffer, final=final)
        for i, sentence in enumerate(sentences):
            await self._speak(sentence, last=final and i == len(sentences) - 1)

    async def _speak(self, sentence: str, last: bool) -> None:
        speaker, conn = self.speaker, self.conn
        speech, offset = await speaker.render(sentence)
        usage = {"characters": speaker.characters}

        def output(kind: str, words: list[dict[str, Any]]) -> dict[str, Any]:
            return {
                "output": {
                    "type": kind,
                    "original_text": sentence,
                    "sentence": {"index": self.index, "words": words},
                },
                "usage": usage,
            }

        await conn.event("result-generated", output("sentence-begin", []))
        frames = await asyncio.to_thread(speaker.encode_frames, speech.pcm, last)
        for data, covered in frames:
            until = round(covered * 1000 / speech.sample_rate)
            await speaker.pace()
            await conn.event(
                "result-generated", output("sentence-synthesis", speaker.words(speech.words, offset, until))
            )
            await conn.audio(data)
        self.last_words = speaker.words(speech.words, offset)
        await conn.event("result-generated", output("sentence-end", self.last_words))
        self.index += 1

    async def _finish(self) -> None:
        speaker = self.speaker
        tail = await asyncio.to_thread(speaker.encoder.finish)
        if tail:  # the encoder still held audio of an earlier sentence: one more synthesis frame
            out = {"type": "sentence-synthesis", "sentence": {"index": max(self.index - 1, 0), "words": []}}
            await self.conn.event(
                "result-generated", {"output": out, "usage": {"characters": speaker.characters}}
            )
            await self.conn.audio(tail)
        sentence = {"index": max(self.index - 1, 0), "words": self.last_words}
        await self.conn.event(
            "task-finished",
            {"output": {"sentence": sentence}, "usage": {"characters": speaker.characters}},
        )


class SambertTask:
    """One-way Sambert (``streaming: out``): the text comes with run-task; no continue/finish."""

    def __init__(
        self,
        conn: Conn,
        state: SimState,
        payload: dict[str, Any],
        params: dict[str, Any],
        item: dict[str, Any],
    ) -> None:
        data = payload.get("input") if isinstance(payload.get("input"), dict) else {}
        text = data.get("text")
        if not isinstance(text, str) or not text.strip():
            raise TaskFailed("InvalidParameter", "input.text must be a non-empty string")
        params = dict(params)
        params.setdefault("format", "wav")
        params.setdefault("sample_rate", 16000)
        params["word_timestamp_enabled"] = params.get("word_timestamp_enabled") is True
        self.speaker = _Speaker(conn, state, params, item)
        self.conn = conn
        self.text = text
        self.phonemes = params.get("phoneme_timestamp_enabled") is True

    async def on_audio(self, data: bytes) -> None:
        raise TaskFailed("InvalidParameter", "binary frames are not accepted by a tts task")

    async def close(self) -> None:
        return None

    async def on_message(self, message: dict[str, Any]) -> bool:
        return False  # one-way: the client sends nothing after run-task

    async def start(self) -> bool:
        speaker = self.speaker
        sentences, _ = split_sentences(strip_markup(self.text), final=True)
        for i, sentence in enumerate(sentences):
            speech, offset = await speaker.render(sentence)
            frames = await asyncio.to_thread(speaker.encode_frames, speech.pcm, i == len(sentences) - 1)
            for data, _covered in frames:
                await speaker.pace()
                await self.conn.audio(data)
            words = []
            if speaker.word_timestamps:
                for w in speech.words:
                    word: dict[str, Any] = {
                        "text": w.text,
                        "begin_time": w.begin_time + offset,
                        "end_time": w.end_time + offset,
                    }
                    if self.phonemes:
                        word["phonemes"] = [
                            {
                                "begin_time": word["begin_time"],
                                "end_time": word["end_time"],
                                "text": w.text,
                                "tone": 0,
                            }
                        ]
                    words.append(word)
            result = {"begin_time": offset, "end_time": offset + speech.duration_ms, "words": words}
            await self.conn.event("result-generated", {"output": {"sentence": result}})
        await self.conn.event("task-finished", {"output": None, "usage": {"characters": speaker.characters}})
        return True
