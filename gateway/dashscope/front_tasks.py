"""Front door tasks on the inference WebSocket: Paraformer realtime ASR and CosyVoice TTS through
the gateway's ASR and TTS chains (reference §4.1, §5.1).

The envelope and the task state machine are ``gateway.dashscope.ws_task`` (shared with the
simulator); these tasks only translate. Each task is one admitted unit of work: the route wraps
it in ``gateway.auth.admitted`` (scope, quota, rate limits, one usage row per task).

- ASR: binary frames are buffered (bounded by the surface's audio limit). Raw PCM is also
  streamed to the chain as it arrives (``Router.transcribe_stream``: the first target that can
  stream, e.g. Paraformer realtime), and each partial goes out at once as an interim
  ``result-generated`` sentence (``sentence_end`` false, ``end_time`` null: the transcript so far).
  On finish-task the final transcript's segments go out as final sentences (``end_time`` set,
  which is how the SDK recognises a sentence end), then ``task-finished``. When no target can
  stream (offline), or for compressed formats, the audio is transcribed whole at finish-task
  and only final sentences are sent.
- TTS: continue-task text is cut into sentences; each sentence is synthesised by the chain and
  streamed as ``sentence-begin``, then one ``sentence-synthesis`` event before each binary audio
  frame, then ``sentence-end``; finish-task speaks the rest and ends with ``task-finished``
  carrying the character count. The audio is one stream per task in the requested format and rate.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import numpy as np

from gateway.audio import AudioDecodeError, StreamEncoder, run_in_codec_pool
from gateway.conversation.sentences import SentenceSplitter
from gateway.dashscope.front_errors import from_exception
from gateway.dashscope.ws_task import Conn, TaskFailed
from gateway.inputs.audio import decode_upload
from providers.base import (
    AudioData,
    SpeechChunk,
    SynthesizeRequest,
    TranscribeRequest,
    Transcript,
    TranscriptPart,
)
from providers.wav import float_to_pcm16, pcm16_to_float, resample

ASR_RATE = 16000
ASR_FORMATS = ("pcm", "wav", "mp3", "opus", "speex", "aac", "amr")
#: The surface whose audio limit (``settings.limits.audio_max_seconds``) a realtime ASR task has.
ASR_SURFACE = "dashscope"
TTS_FORMATS = ("pcm", "wav", "mp3", "opus")
#: ``AudioFormat.DEFAULT`` of the SDK sends format "default" (and no rate): CosyVoice then
#: answers in its default, mp3 at 22050 Hz (reference §7).
DEFAULT_TTS_FORMAT, DEFAULT_TTS_RATE = "mp3", 22050
#: CosyVoice's limits per continue-task and per task (reference §5.1).
MAX_CONTINUE_CHARS, MAX_TOTAL_CHARS = 20_000, 200_000

#: ``record(**fields)`` of the task's usage row.
Record = Callable[..., None]
#: ``transcribe_stream(request, pcm chunks) -> parts``: the router's streaming call, bound.
StreamTranscribe = Callable[[TranscribeRequest, AsyncIterator[bytes]], AsyncIterator[TranscriptPart]]


def _failed(exc: BaseException) -> TaskFailed:
    err, _ = from_exception(exc)
    return TaskFailed(err.code, err.message)


def pcm_at_rate(chunk: SpeechChunk, rate: int) -> bytes:
    """A chain's PCM piece at ``rate``: a fallback voice speaks at its own rate, and a native
    audio stream carries no rate field, so the client must get the one it asked for."""
    if chunk.sample_rate == rate or not chunk.pcm:
        return chunk.pcm
    samples = pcm16_to_float(np.frombuffer(chunk.pcm[: len(chunk.pcm) - len(chunk.pcm) % 2], dtype="<i2"))
    return float_to_pcm16(resample(samples, chunk.sample_rate, rate)).tobytes()


def _rate(params: dict[str, Any], default: int) -> int:
    rate = params.get("sample_rate")
    if rate is None or rate == 0:
        return default
    if not isinstance(rate, int) or isinstance(rate, bool) or not 8000 <= rate <= 48000:
        raise TaskFailed("InvalidParameter", "sample_rate must be an integer in [8000, 48000]")
    return rate


class AsrTask:
    """Realtime recognition through ``transcribe(request) -> Transcript`` (the router, bound)."""

    def __init__(
        self,
        conn: Conn,
        model: str,
        params: dict[str, Any],
        settings: Any,
        transcribe: Callable[[TranscribeRequest], Awaitable[Any]],
        charge: Callable[[float], Awaitable[None]],
        record: Record,
        stream_transcribe: StreamTranscribe | None = None,
    ) -> None:
        self.conn, self.model, self.settings = conn, model, settings
        self.transcribe, self.charge, self.record = transcribe, charge, record
        self.format = str(params.get("format") or "pcm").lower()
        if self.format not in ASR_FORMATS:
            raise TaskFailed("InvalidParameter", f"unsupported audio format '{self.format[:32]}'")
        self.rate = _rate(params, ASR_RATE)
        hints = params.get("language_hints")
        self.language = hints[0] if isinstance(hints, list) and hints and isinstance(hints[0], str) else None
        seconds = settings.limits.audio_seconds(ASR_SURFACE)
        #: raw PCM at the declared rate, or the upload limit for compressed formats
        self.max_bytes = (
            int(seconds * self.rate * 2) if self.format in ("pcm", "wav") else settings.max_upload_bytes
        )
        self.audio = bytearray()
        #: the streamed recognition of raw PCM (None: whole-utterance at finish-task)
        self.stream_transcribe = stream_transcribe if self.format == "pcm" else None
        self._feed: asyncio.Queue[bytes | None] | None = None
        self._streamed = 0  # bytes of ``audio`` sent to the stream
        self._reader: asyncio.Task[Transcript] | None = None

    async def start(self) -> bool:
        return False

    async def close(self) -> None:
        self.audio = bytearray()
        if self._reader is not None and not self._reader.done():
            self._reader.cancel()
            with contextlib.suppress(BaseException):
                await self._reader  # closes the upstream stream

    async def on_audio(self, data: bytes) -> None:
        if len(self.audio) + len(data) > self.max_bytes:
            raise TaskFailed(
                "BadRequest.TooLarge",
                f"The task's audio exceeds this gateway's limit of "
                f"{self.settings.limits.audio_seconds(ASR_SURFACE):g} seconds.",
            )
        self.audio.extend(data)
        end = len(self.audio) - len(self.audio) % 2  # whole samples only; an odd byte waits
        if self.stream_transcribe is not None and end > self._streamed:
            if self._feed is None:
                try:  # a tenant with no ASR quota left streams nothing upstream
                    await self.charge(0.0)
                except Exception as exc:
                    raise _failed(exc) from None
                self._feed = asyncio.Queue()
                self._reader = asyncio.create_task(self._read_stream(self._feed))
            self._feed.put_nowait(bytes(self.audio[self._streamed : end]))
            self._streamed = end

    async def _read_stream(self, feed: asyncio.Queue[bytes | None]) -> Transcript:
        """Sends each partial as an interim sentence; returns the final transcript."""

        async def chunks() -> AsyncIterator[bytes]:
            while (chunk := await feed.get()) is not None:
                yield chunk

        assert self.stream_transcribe is not None
        request = TranscribeRequest(model=self.model, audio=AudioData(b"", self.rate), language=self.language)
        parts = self.stream_transcribe(request, chunks())
        sent = ""
        try:
            async for part in parts:
                if part.final:
                    assert part.transcript is not None
                    return part.transcript
                if part.text.strip() and part.text != sent:
                    sent = part.text
                    await self.conn.event(
                        "result-generated", {"output": {"sentence": _interim(sent)}, "usage": None}
                    )
        finally:
            with contextlib.suppress(Exception):
                await parts.aclose()  # type: ignore[attr-defined]
        raise TaskFailed("InternalError", "the recognition stream ended without a final transcript")

    async def on_message(self, message: dict[str, Any]) -> bool:
        if message["header"]["action"] == "continue-task":
            return False  # update_context(): nothing to recognise differently
        await self._finish()
        return True

    async def _decode(self) -> AudioData:
        data = bytes(self.audio)
        if self.format == "pcm":
            return AudioData(pcm=data[: len(data) - len(data) % 2], sample_rate=self.rate)
        try:
            return await decode_upload(data, ASR_RATE, self.settings.limits, ASR_SURFACE)
        except AudioDecodeError as exc:
            raise TaskFailed("InvalidParameter", f"audio could not be decoded: {exc}") from None

    async def _finish(self) -> None:
        if self.audio:
            audio = await self._decode()
            try:
                await self.charge(audio.duration_s)
                if self._reader is not None and self._feed is not None:
                    self._feed.put_nowait(None)  # the end of the audio: the stream's final follows
                    transcript = await self._reader
                else:
                    request = TranscribeRequest(model=self.model, audio=audio, language=self.language)
                    transcript = await self.transcribe(request)
            except TaskFailed:
                raise
            except Exception as exc:
                raise _failed(exc) from None
            self.record(audio_seconds=audio.duration_s)
            segments = transcript.segments or []
            if not segments and transcript.text.strip():
                segments = [_Whole(transcript.text, audio.duration_s)]
            for index, segment in enumerate(segments, start=1):
                begin, end = round(segment.start * 1000), round(segment.end * 1000)
                words = [
                    {
                        "begin_time": round(w.start * 1000),
                        "end_time": round(w.end * 1000),
                        "text": w.text,
                        "punctuation": "",
                    }
                    for w in getattr(segment, "words", [])
                ]
                sentence = {
                    "begin_time": begin,
                    "end_time": max(end, begin),
                    "text": segment.text.strip(),
                    "heartbeat": False,
                    "sentence_end": True,
                    "sentence_id": index,
                    "words": words,
                }
                usage = {"duration": max(1, round(segment.end - segment.start))}
                await self.conn.event("result-generated", {"output": {"sentence": sentence}, "usage": usage})
        await self.conn.event("task-finished", {"output": {}, "usage": None})


def _interim(text: str) -> dict[str, Any]:
    """The transcript so far as Paraformer's interim sentence: no end time, not a sentence end."""
    return {
        "begin_time": 0,
        "end_time": None,
        "text": text.strip(),
        "heartbeat": False,
        "sentence_end": False,
        "sentence_id": 1,
        "words": [],
    }


class _Whole:
    """One segment spanning the audio, for a transcript that came without segments."""

    def __init__(self, text: str, seconds: float) -> None:
        self.text, self.start, self.end, self.words = text, 0.0, seconds, []


class TtsTask:
    """Duplex CosyVoice through ``synthesize_stream(request) -> AsyncIterator[SpeechChunk]``."""

    def __init__(
        self,
        conn: Conn,
        model: str,
        params: dict[str, Any],
        settings: Any,
        synthesize_stream: Callable[[SynthesizeRequest], Awaitable[Any]],
        charge: Callable[[float], Awaitable[None]],
        record: Record,
    ) -> None:
        self.conn, self.model, self.settings = conn, model, settings
        self.synthesize_stream, self.charge, self.record = synthesize_stream, charge, record
        fmt = str(params.get("format") or "default").lower()
        self.rate = _rate(params, DEFAULT_TTS_RATE)
        if fmt == "default":
            fmt = DEFAULT_TTS_FORMAT
        if fmt not in TTS_FORMATS:
            raise TaskFailed("InvalidParameter", f"unsupported audio format '{fmt[:32]}'")
        self.format = fmt
        voice = params.get("voice")
        if voice is not None and (not isinstance(voice, str) or len(voice) > 128):
            raise TaskFailed("InvalidParameter", "parameters.voice must be a voice name")
        voice = voice or settings.voices.default
        self.voice = settings.voices.aliases.get(voice, voice)
        speed = params.get("rate", 1.0)
        if not isinstance(speed, int | float) or isinstance(speed, bool) or not 0.5 <= speed <= 2.0:
            raise TaskFailed("InvalidParameter", "rate must be a number in [0.5, 2]")
        self.speed = float(speed)
        self.splitter = SentenceSplitter()
        self.encoder = StreamEncoder(self.format, self.rate)
        self.characters = 0
        self.index = 0

    async def start(self) -> bool:
        return False

    async def close(self) -> None:
        self.encoder.close()

    async def on_audio(self, data: bytes) -> None:
        raise TaskFailed("InvalidParameter", "binary frames are not accepted by a tts task")

    async def on_message(self, message: dict[str, Any]) -> bool:
        payload = message.get("payload") if isinstance(message.get("payload"), dict) else {}
        data = payload.get("input") if isinstance(payload.get("input"), dict) else {}
        if message["header"]["action"] == "finish-task":
            if data.get("directive") == "cancel":
                self.splitter = SentenceSplitter()
            else:
                for sentence in self.splitter.flush():
                    await self._speak(sentence)
            await self._finish()
            return True
        text = data.get("text")
        if isinstance(text, str) and text:
            if len(text) > MAX_CONTINUE_CHARS or self.characters + len(text) > MAX_TOTAL_CHARS:
                raise TaskFailed("InvalidParameter", "text is too long")
            if (
                len(text) > self.settings.max_tts_chars
                or self.characters + len(text) > self.settings.max_tts_chars
            ):
                raise TaskFailed(
                    "InvalidParameter",
                    f"The task's text exceeds this gateway's limit of {self.settings.max_tts_chars} characters.",
                )
            await self.charge(len(text))
            self.characters += len(text)
            self.record(characters=len(text))
            sentences = self.splitter.feed(text)
            if data.get("flush") is True:
                sentences += self.splitter.flush()
            for sentence in sentences:
                await self._speak(sentence)
        elif data.get("flush") is True:
            for sentence in self.splitter.flush():
                await self._speak(sentence)
        return False

    def _output(self, kind: str, sentence: str) -> dict[str, Any]:
        return {
            "output": {
                "type": kind,
                "original_text": sentence,
                "sentence": {"index": self.index, "words": []},
            },
            "usage": {"characters": self.characters},
        }

    async def _send_audio(self, pcm: bytes) -> None:
        encoded = (
            await run_in_codec_pool(self.encoder.feed, pcm)
            if self.format not in ("pcm", "wav")
            else self.encoder.feed(pcm)
        )
        if encoded:
            await self.conn.event("result-generated", self._output("sentence-synthesis", ""))
            await self.conn.audio(encoded)

    async def _speak(self, sentence: str) -> None:
        if not sentence.strip():
            return
        request = SynthesizeRequest(
            model=self.model, text=sentence, voice=self.voice, speed=self.speed, sample_rate=self.rate
        )
        await self.conn.event("result-generated", self._output("sentence-begin", sentence))
        try:
            stream = await self.synthesize_stream(request)
            async for chunk in stream:
                await self._send_audio(pcm_at_rate(chunk, self.rate))
        except TaskFailed:
            raise
        except Exception as exc:
            raise _failed(exc) from None
        await self.conn.event("result-generated", self._output("sentence-end", sentence))
        self.index += 1

    async def _finish(self) -> None:
        tail = await run_in_codec_pool(self.encoder.finish)
        if tail:
            await self.conn.event("result-generated", self._output("sentence-synthesis", ""))
            await self.conn.audio(tail)
        sentence = {"index": max(self.index - 1, 0), "words": []}
        await self.conn.event(
            "task-finished", {"output": {"sentence": sentence}, "usage": {"characters": self.characters}}
        )
