"""``FlowingSpeechSynthesizer`` task: streaming-text TTS (reference nls-protocol.md §6).

``StartSynthesis`` → ``SynthesisStarted`` (header only); then any number of ``RunSynthesis``
directives whose ``payload.text`` fragments need not end on a word: the text is re-cut into
sentences (``gateway/sim/text.split_sentences``), and each complete sentence is answered with
``SentenceBegin`` ``{"index"}``, its audio in binary frames, ``SentenceSynthesis`` and
``SentenceEnd`` (``{"subtitles": [...]}``, empty unless ``enable_subtitle``). ``StopSynthesis``
speaks what is left, then ``SynthesisCompleted``. The session's audio is one stream in its format
(one WAV header, one MP3 stream). The Python SDK's quirks are accepted: ``session_id`` in the
payload and ``volumn`` for ``volume``. Limits: 10,000 characters per RunSynthesis, 100,000 per
session (40000003 beyond).
"""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.sim.audio_codec import StreamEncoder
from gateway.sim.http_common import sleep_ms
from gateway.sim.nls.conn import NlsConn
from gateway.sim.nls.synthesizer import FRAME_S, speech_params
from gateway.sim.nls.wire import NlsFailure
from gateway.sim.state import SimState
from gateway.sim.text import split_sentences, strip_markup
from gateway.sim.voice import synthesize

MAX_RUN_CHARS = 10_000
MAX_SESSION_CHARS = 100_000


class FlowingSynthesizerTask:
    stop_name = "StopSynthesis"
    #: directives a started task takes besides its Stop (gateway.Session routes them here)
    directives = frozenset({"RunSynthesis"})

    def __init__(self, conn: NlsConn, state: SimState, payload: dict[str, Any], item: dict[str, Any]) -> None:
        self.conn, self.state, self.item = conn, state, item
        volume_name = (
            "volumn" if "volumn" in payload and "volume" not in payload else "volume"
        )  # the SDK's spelling
        self.format, self.sample_rate, self.volume = speech_params(payload, "longxiaochun", volume_name)
        self.subtitles = payload.get("enable_subtitle") is True
        self.encoder = StreamEncoder(self.format, self.sample_rate)
        self.pending = ""
        self.characters = 0
        self.index = 0
        self.elapsed_ms = 0
        item["text_chars"] = 0

    async def start(self) -> bool:
        await self.conn.event("SynthesisStarted")
        return False

    async def on_audio(self, data: bytes) -> None:
        raise NlsFailure(40000002, "Can't process binary message in a synthesis task!")

    async def on_directive(self, name: str, message: dict[str, Any]) -> None:
        payload = message.get("payload") if isinstance(message.get("payload"), dict) else {}
        text = payload.get("text")
        if not isinstance(text, str):
            raise NlsFailure(40000003, "Parameter 'text' is missing!")
        if len(text) > MAX_RUN_CHARS or self.characters + len(text) > MAX_SESSION_CHARS:
            raise NlsFailure(40000003, "Text is too long!")
        self.characters += len(text)
        self.item["text_chars"] = self.characters
        sentences, self.pending = split_sentences(self.pending + text, final=False)
        for sentence in sentences:
            await self._speak(sentence)

    async def stop(self) -> None:
        sentences, self.pending = split_sentences(self.pending, final=True)
        for sentence in sentences:
            await self._speak(sentence)
        tail = await asyncio.to_thread(self.encoder.finish)
        if tail:
            await self.conn.audio(tail)
        await self.conn.event("SynthesisCompleted")

    async def _speak(self, sentence: str) -> None:
        speech = await asyncio.to_thread(synthesize, strip_markup(sentence), self.sample_rate, self.volume)
        await self.conn.event("SentenceBegin", {"index": self.index})
        step = max(int(self.sample_rate * FRAME_S), 1)
        config = self.state.config
        for n, i in enumerate(range(0, len(speech.pcm), step)):
            frame = await asyncio.to_thread(self.encoder.encode, speech.pcm[i : i + step])
            await sleep_ms(config.tts_first_chunk_ms if n == 0 else config.tts_chunk_delay_ms)
            if frame:
                await self.conn.audio(frame)
        subtitles = self._subtitles(sentence, speech) if self.subtitles else []
        await self.conn.event("SentenceSynthesis", {"subtitles": subtitles})
        await self.conn.event("SentenceEnd", {"subtitles": subtitles})
        self.elapsed_ms += speech.duration_ms
        self.index += 1

    def _subtitles(self, sentence: str, speech: Any) -> list[dict[str, Any]]:
        """Word timings from the start of the session (SentenceEnd's are the whole sentence's)."""
        return [
            {
                "text": w.text,
                "begin_time": self.elapsed_ms + w.begin_time,
                "end_time": self.elapsed_ms + w.end_time,
                "begin_index": w.begin_index,
                "end_index": w.end_index,
                "sentence": False,
                "phoneme_list": [],
            }
            for w in speech.words
        ]
