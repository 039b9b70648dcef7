"""Real-time ASR task (Paraformer / Fun-ASR over the duplex WebSocket, reference §4.1).

Audio arrives in binary frames. Every ``PARTIAL_EVERY_S`` of new audio the task sends a partial
result (``end_time: null``, a growing prefix of the transcript); on finish-task it sends one final
result per sentence, with sentence and word times spread over the real audio length, then
task-finished with a non-empty payload (the SDK's on_complete needs one).
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

from gateway.dashscope.ws_task import Conn, TaskFailed
from gateway.sim.audio_codec import audio_duration
from gateway.sim.http_common import sleep_ms
from gateway.sim.state import SimState
from gateway.sim.text import default_transcript, split_sentences, words_with_spans

PARTIAL_EVERY_S = 0.4
RAW_FORMATS = ("pcm", "wav")
ASR_FORMATS = ("pcm", "wav", "mp3", "opus", "speex", "aac", "amr")


def _timed_words(sentence: str, begin_ms: int, end_ms: int) -> list[dict[str, Any]]:
    """Words of ``sentence`` spread over [begin_ms, end_ms] by character length, with punctuation."""
    spans = words_with_spans(sentence)
    if not spans:
        return []
    total = sum(len(w) for w, _, _ in spans)
    span_ms = max(end_ms - begin_ms, len(spans))
    words, cursor = [], float(begin_ms)
    for i, (word, _, end) in enumerate(spans):
        length = span_ms * len(word) / total
        next_begin = spans[i + 1][1] if i + 1 < len(spans) else len(sentence)
        punctuation = sentence[end:next_begin].strip()
        words.append(
            {
                "begin_time": round(cursor),
                "end_time": round(cursor + length),
                "text": word,
                "punctuation": punctuation,
            }
        )
        cursor += length
    return words


class AsrTask:
    """One recognition task on a connection."""

    def __init__(
        self,
        conn: Conn,
        state: SimState,
        payload: dict[str, Any],
        params: dict[str, Any],
        item: dict[str, Any],
    ) -> None:
        self.conn, self.state, self.item = conn, state, item
        self.format = str(params.get("format") or "pcm").lower()
        if self.format not in ASR_FORMATS:
            raise TaskFailed("InvalidParameter", f"unsupported audio format '{self.format}'")
        rate = params.get("sample_rate", 16000)
        if not isinstance(rate, int) or isinstance(rate, bool) or not 8000 <= rate <= 48000:
            raise TaskFailed("InvalidParameter", "sample_rate must be an integer in [8000, 48000]")
        self.sample_rate = rate
        self.audio = bytearray()
        self.next_partial_s = PARTIAL_EVERY_S
        self.busy_until = 0.0  # loop time when the recognition work of the audio so far is done

    async def start(self) -> bool:
        return False

    async def close(self) -> None:
        # The request log shows how a task ended: "finished" after a finish-task was answered,
        # "closed" once the connection let go of it (a client that abandoned a stream: closed only).
        self.item["closed"] = True

    def _raw_seconds(self) -> float | None:
        if self.format == "pcm":
            return len(self.audio) / (2 * self.sample_rate)
        if self.format == "wav":
            return max(len(self.audio) - 44, 0) / (2 * self.sample_rate)
        return None  # compressed: no partials, the duration is decoded at the end

    def _transcript(self, seconds: float) -> str:
        configured = self.state.config.asr_transcript
        return configured if configured is not None else default_transcript(seconds)

    async def on_audio(self, data: bytes) -> None:
        self.audio.extend(data)
        work_ms = self.state.config.asr_ms_per_audio_s
        if work_ms and self.format == "pcm":
            now = asyncio.get_running_loop().time()
            self.busy_until = max(now, self.busy_until) + work_ms * len(data) / (2 * self.sample_rate) / 1000
        self.item["audio_bytes"] = len(self.audio)
        self.item["audio_frames"] = self.item.get("audio_frames", 0) + 1
        seconds = self._raw_seconds()
        if seconds is None or seconds < self.next_partial_s:
            return
        self.next_partial_s = seconds + PARTIAL_EVERY_S
        words = words_with_spans(self._transcript(seconds))
        shown = min(len(words) - 1, int(seconds / PARTIAL_EVERY_S))
        if shown <= 0:
            return
        text_end = words[shown - 1][2]
        text = self._transcript(seconds)[:text_end]
        begin = min(200, round(seconds * 50))
        sentence = {
            "begin_time": begin,
            "end_time": None,
            "text": text,
            "heartbeat": False,
            "sentence_end": False,
            "sentence_id": 1,
            "words": _timed_words(text, begin, round(seconds * 1000)),
        }
        await self.conn.event("result-generated", {"output": {"sentence": sentence}, "usage": None})
        self.item["partials"] = self.item.get("partials", 0) + 1

    async def on_message(self, message: dict[str, Any]) -> bool:
        if message["header"]["action"] == "continue-task":
            return False  # update_context(): nothing to recognise differently
        await self._finish()
        return True

    async def _finish(self) -> None:
        data = bytes(self.audio)
        try:
            if self._raw_seconds() is not None and self.format == "pcm":
                seconds = len(data) / (2 * self.sample_rate)
            else:
                seconds = await asyncio.to_thread(audio_duration, data, self.format, self.sample_rate)
        except ValueError as exc:
            raise TaskFailed("InvalidParameter", f"audio could not be decoded: {exc}") from exc
        backlog = self.busy_until - asyncio.get_running_loop().time()
        await sleep_ms(self.state.config.asr_delay_ms + max(0.0, backlog) * 1000)
        total_ms = round(seconds * 1000)
        if data:
            sentences, _ = split_sentences(self._transcript(seconds), final=True)
            margin = min(200, total_ms // 20)
            weights = [max(len(s), 1) for s in sentences]
            cursor, usable = float(margin), max(total_ms - 2 * margin, 0)
            for index, (sentence, weight) in enumerate(zip(sentences, weights, strict=True), start=1):
                begin = round(cursor)
                cursor += usable * weight / sum(weights)
                end = round(cursor)
                result = {
                    "begin_time": begin,
                    "end_time": end,
                    "text": sentence,
                    "heartbeat": False,
                    "sentence_end": True,
                    "sentence_id": index,
                    "words": _timed_words(sentence, begin, end),
                }
                usage = {"duration": max(1, math.ceil((end - begin) / 1000))}
                await self.conn.event("result-generated", {"output": {"sentence": result}, "usage": usage})
        await self.conn.event("task-finished", {"output": {}, "usage": None})
        self.item["finished"] = True
