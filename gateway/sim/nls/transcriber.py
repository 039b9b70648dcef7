"""``SpeechTranscriber`` (realtime) and ``SpeechRecognizer`` (one sentence) tasks (reference §3, §4).

Deterministic content: the transcript is the configured ``asr_transcript`` or the simulator's
``default_transcript`` for the audio's duration, cut into sentences; each sentence is placed over
the audio in proportion to its length. With intermediate results on, a growing prefix of the first
sentence is reported every ``PARTIAL_EVERY_S`` of audio as it arrives; sentence ends come when Stop
arrives (the simulator does no VAD), then ``TranscriptionCompleted``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.sim.audio_codec import audio_duration
from gateway.sim.http_common import sleep_ms
from gateway.sim.nls.conn import NlsConn
from gateway.sim.nls.wire import NlsFailure, new_id
from gateway.sim.state import SimState
from gateway.sim.text import default_transcript, split_sentences, words_with_spans

SAMPLE_RATES = (8000, 16000)
FORMATS = ("pcm", "wav", "opus", "opu", "speex", "amr", "mp3", "aac")
PARTIAL_EVERY_S = 0.4
#: one-sentence recognition limit (reference §4)
RECOGNIZER_MAX_S = 60.0


def _flag(payload: dict[str, Any], name: str) -> bool:
    return payload.get(name) is True


class TranscriberTask:
    def __init__(self, conn: NlsConn, state: SimState, payload: dict[str, Any], item: dict[str, Any]) -> None:
        self.conn, self.state, self.item = conn, state, item
        self.recognizer = conn.namespace == "SpeechRecognizer"
        self.stop_name = "StopRecognition" if self.recognizer else "StopTranscription"
        self.format = str(payload.get("format") or "pcm").lower()
        if self.format not in FORMATS:
            raise NlsFailure(40000003, f"Invalid format '{self.format[:32]}'!")
        rate = payload.get("sample_rate", 16000)
        if rate not in SAMPLE_RATES or isinstance(rate, bool):
            raise NlsFailure(41010101, "UNSUPPORTED_SAMPLE_RATE")
        self.sample_rate = int(rate)
        silence = payload.get("max_sentence_silence", 800)
        if not isinstance(silence, int) or isinstance(silence, bool) or not 200 <= silence <= 6000:
            raise NlsFailure(40000003, "max_sentence_silence must be in [200, 6000]!")
        self.intermediate = _flag(payload, "enable_intermediate_result")
        self.words = _flag(payload, "enable_words")
        self.audio = bytearray()
        self.next_partial_s = PARTIAL_EVERY_S
        self.begun = False

    async def start(self) -> bool:
        await self.conn.event("RecognitionStarted" if self.recognizer else "TranscriptionStarted")
        return False

    def _seconds_so_far(self) -> float | None:
        if self.format == "pcm":
            return len(self.audio) / (2 * self.sample_rate)
        if self.format == "wav":
            return max(len(self.audio) - 44, 0) / (2 * self.sample_rate)
        return None

    def _transcript(self, seconds: float) -> str:
        configured = self.state.config.asr_transcript
        return configured if configured is not None else default_transcript(seconds)

    async def on_audio(self, data: bytes) -> None:
        self.audio.extend(data)
        self.item["audio_bytes"] = len(self.audio)
        seconds = self._seconds_so_far()
        if self.recognizer and seconds is not None and seconds > RECOGNIZER_MAX_S:
            raise NlsFailure(40000000, "Audio is longer than 60 seconds!")
        if not self.intermediate or seconds is None or seconds < self.next_partial_s:
            return
        self.next_partial_s = seconds + PARTIAL_EVERY_S
        first = split_sentences(self._transcript(seconds), final=True)[0][:1]
        spans = words_with_spans(first[0]) if first else []
        shown = min(len(spans) - 1, int(seconds / PARTIAL_EVERY_S))
        if shown <= 0:
            return
        text = first[0][: spans[shown - 1][2]]
        now_ms = round(seconds * 1000)
        if self.recognizer:
            await self.conn.event("RecognitionResultChanged", {"result": text, "duration": now_ms})
            return
        if not self.begun:
            self.begun = True
            await self.conn.event("SentenceBegin", {"index": 1, "time": min(200, now_ms)})
        payload = {"index": 1, "time": now_ms, "result": text, "confidence": 0.5, "words": [], "status": 0}
        await self.conn.event("TranscriptionResultChanged", payload)

    async def _duration(self) -> float:
        data = bytes(self.audio)
        if self.format == "pcm":
            return len(data) / (2 * self.sample_rate)
        try:
            return await asyncio.to_thread(audio_duration, data, self.format, self.sample_rate)
        except ValueError as exc:
            raise NlsFailure(40270003, f"DECODE_ERROR: {str(exc)[:120]}") from exc

    async def stop(self) -> None:
        seconds = await self._duration()
        await sleep_ms(self.state.config.asr_delay_ms)
        total_ms = round(seconds * 1000)
        sentences = split_sentences(self._transcript(seconds), final=True)[0] if self.audio else []
        if self.recognizer:
            payload = {"result": " ".join(sentences), "duration": total_ms}
            await self.conn.event("RecognitionCompleted", payload)
            return
        margin = min(200, total_ms // 20)
        usable = max(total_ms - 2 * margin, 0)
        weights = [max(len(s), 1) for s in sentences]
        cursor = float(margin)
        for index, sentence in enumerate(sentences, start=1):
            begin = round(cursor)
            cursor += usable * weights[index - 1] / sum(weights)
            end = round(cursor)
            if not (index == 1 and self.begun):
                await self.conn.event("SentenceBegin", {"index": index, "time": begin})
            await self.conn.event("SentenceEnd", self._sentence_end(index, sentence, begin, end))
        await self.conn.event("TranscriptionCompleted")

    def _sentence_end(self, index: int, text: str, begin: int, end: int) -> dict[str, Any]:
        words: list[dict[str, Any]] = []
        if self.words:
            spans = words_with_spans(text)
            step = (end - begin) / max(len(spans), 1)
            words = [
                {"text": w, "startTime": round(begin + i * step), "endTime": round(begin + (i + 1) * step)}
                for i, (w, _, _) in enumerate(spans)
            ]
        return {
            "index": index,
            "time": end,
            "result": text,
            "confidence": 0.9,
            "words": words,
            "status": 0,
            "gender": "",
            "begin_time": begin,
            "fixed_result": "",
            "unfixed_result": "",
            "stash_result": {
                "sentenceId": index + 1,
                "beginTime": end,
                "text": "",
                "fixedText": "",
                "unfixedText": "",
                "currentTime": end,
                "words": [],
            },
            "audio_extra_info": "",
            "sentence_id": new_id(),
            "gender_score": 0.0,
        }
