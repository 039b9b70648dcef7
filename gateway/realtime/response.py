"""One ``response.create``: the LLM answer streamed as text deltas and, with audio on, spoken.

The answer is cut into sentences while it streams; each sentence is synthesised while the next
is still generated (a second task joined by a queue), so the first audio leaves long before the
reply ends. All calls go through the router. The whole response is one asyncio task: cancelling
it (``response.cancel``, or the socket closing) cancels the LLM and TTS calls, which closes
their upstream streams, so generation that nobody will hear is no longer billed.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.context import RequestContext
from gateway.conversation.sentences import SentenceSplitter, clean_for_speech, speakable
from gateway.realtime.events import PCM_RATE, encode_pcm, message_item, new_id, server_event, usage_object
from policies.routing import StreamInterrupted, UnknownModelError
from providers.base import ChatRequest, ErrorKind, ProviderError, SynthesizeRequest
from providers.wav import float_to_pcm16, pcm16_to_float, resample

Send = Callable[[dict[str, Any]], Awaitable[None]]
#: Bytes per response.output_audio.delta: 100 ms of 24 kHz PCM16, small enough for playback
#: to start at once, large enough not to flood the socket with tiny frames.
AUDIO_CHUNK_BYTES = PCM_RATE // 10 * 2
_DONE = object()


def to_rate(pcm: bytes, src: int, dst: int) -> bytes:
    """16-bit mono PCM at ``src`` Hz → ``dst`` Hz (identity when equal)."""
    if src == dst or not pcm:
        return pcm
    return float_to_pcm16(resample(pcm16_to_float(pcm), src, dst)).tobytes()


def error_of(exc: BaseException) -> tuple[str, str, str]:
    """(type, code, message) of a failed model call, for the ``error`` event and status_details."""
    if isinstance(exc, StreamInterrupted):
        exc = exc.cause
    if isinstance(exc, ProviderError):
        kind = "invalid_request_error" if exc.kind == ErrorKind.BAD_REQUEST else "server_error"
        return kind, exc.code or str(exc.kind), exc.message
    if isinstance(exc, UnknownModelError):
        return "invalid_request_error", "model_not_found", str(exc)
    return "server_error", "internal_error", "The response failed inside the gateway."


class ResponseTurn:
    """State of one response; ``run`` sends every event from response.created to response.done."""

    def __init__(
        self,
        *,
        send: Send,
        router: Any,
        messages: list[dict[str, Any]],
        chat_model: str,
        voice: str,
        audio: bool,
        max_output_tokens: int | None,
        temperature: float | None,
        describe: dict[str, Any],
    ) -> None:
        self.send = send
        self.router = router
        self.messages = messages
        self.chat_model = chat_model
        self.voice = voice
        self.audio = audio
        self.max_output_tokens = max_output_tokens
        self.temperature = temperature
        self.id = new_id("resp")
        self.item_id = new_id("item")
        self.describe = describe  # session values echoed in the response object
        self.ctx = RequestContext(request_id=uuid.uuid4().hex)
        self.text = ""
        self.started = False  # output item announced: failures now leave an incomplete item
        self.tokens_in = 0
        self.tokens_out = 0
        self.cancel_reason: str | None = None  # client_cancelled | turn_detected, set before cancelling
        self.audio_bytes = 0  # output audio sent so far (24 kHz PCM16)

    # ------------------------------------------------------------------ events

    def _response(self, status: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
        output = [self._item("completed" if status == "completed" else "incomplete")] if self.started else []
        return {
            "id": self.id,
            "object": "realtime.response",
            "status": status,
            "status_details": details,
            "output": output if status != "in_progress" else [],
            "output_modalities": ["audio" if self.audio else "text"],
            "audio": {"output": {"format": {"type": "audio/pcm", "rate": PCM_RATE}, "voice": self.voice}},
            "conversation_id": self.describe.get("conversation_id"),
            "max_output_tokens": self.max_output_tokens or "inf",
            "metadata": None,
            "usage": usage_object(self.tokens_in, self.tokens_out) if status != "in_progress" else None,
        }

    def _item(self, status: str) -> dict[str, Any]:
        return message_item(
            self.item_id, "assistant", self.text, status=status, kind="audio" if self.audio else "text"
        )

    def _ids(self) -> dict[str, Any]:
        return {"response_id": self.id, "item_id": self.item_id, "output_index": 0, "content_index": 0}

    def _part(self) -> dict[str, Any]:
        return (
            {"type": "audio", "transcript": self.text} if self.audio else {"type": "text", "text": self.text}
        )

    # ------------------------------------------------------------------ the turn

    async def run(self, prepare: Callable[[], Awaitable[None]] | None = None) -> str:
        """Sends the response; returns its status (completed | cancelled | failed).

        ``prepare`` runs after response.created (the session waits there for pending
        transcriptions and fills ``messages``), so a cancel during it is still reported."""
        await self.send(server_event("response.created", response=self._response("in_progress")))
        try:
            if prepare is not None:
                await prepare()
            await self._generate()
        except asyncio.CancelledError:
            if self.cancel_reason is None:
                raise  # the session is closing: nobody is listening
            details = {"type": "cancelled", "reason": self.cancel_reason}
            await self.send(server_event("response.done", response=self._response("cancelled", details)))
            return "cancelled"
        except Exception as exc:
            type_, code, message = error_of(_first(exc))
            error = {"type": type_, "code": code, "message": message}
            await self.send(server_event("error", error={**error, "param": None, "event_id": None}))
            details = {"type": "failed", "error": error}
            await self.send(server_event("response.done", response=self._response("failed", details)))
            return "failed"
        await self._finish()
        return "completed"

    async def _generate(self) -> None:
        request = ChatRequest(
            model=self.chat_model,
            messages=self.messages,
            max_tokens=self.max_output_tokens,
            temperature=self.temperature,
        )
        stream = await self.router.chat_stream(request, self.ctx)
        sentences: asyncio.Queue[Any] = asyncio.Queue()
        try:
            await self._announce()
            async with asyncio.TaskGroup() as group:
                if self.audio:
                    group.create_task(self._speak(sentences))
                await self._stream_text(stream, sentences)
        finally:
            with contextlib.suppress(Exception):
                await stream.aclose()

    async def _announce(self) -> None:
        self.started = True
        item = self._item("in_progress")
        await self.send(
            server_event("response.output_item.added", response_id=self.id, output_index=0, item=item)
        )
        await self.send(server_event("conversation.item.added", previous_item_id=None, item=item))
        ids = self._ids()
        await self.send(server_event("response.content_part.added", **ids, part=self._part()))

    async def _stream_text(self, stream: Any, sentences: asyncio.Queue[Any]) -> None:
        splitter = SentenceSplitter()
        delta_type = "response.output_audio_transcript.delta" if self.audio else "response.output_text.delta"
        try:
            async for chunk in stream:
                if chunk.usage is not None:
                    self.tokens_in, self.tokens_out = chunk.usage.prompt_tokens, chunk.usage.completion_tokens
                if chunk.finish_reason == "content_filter":
                    raise ProviderError(
                        ErrorKind.CONTENT_FILTERED, "the reply was stopped by the content filter"
                    )
                if not chunk.delta:
                    continue
                self.text += chunk.delta
                await self.send(server_event(delta_type, **self._ids(), delta=chunk.delta))
                if self.audio:
                    for sentence in splitter.feed(chunk.delta):
                        await sentences.put(sentence)
            if self.audio:
                for sentence in splitter.flush():
                    await sentences.put(sentence)
        finally:
            await sentences.put(_DONE)

    async def _speak(self, sentences: asyncio.Queue[Any]) -> None:
        while (sentence := await sentences.get()) is not _DONE:
            spoken = clean_for_speech(sentence)
            if not speakable(spoken):
                continue
            request = SynthesizeRequest(model="", text=spoken, voice=self.voice, sample_rate=PCM_RATE)
            result = await self.router.synthesize(request, self.ctx)
            pcm = await asyncio.to_thread(to_rate, result.audio.pcm, result.audio.sample_rate, PCM_RATE)
            for start in range(0, len(pcm), AUDIO_CHUNK_BYTES):
                chunk = encode_pcm(pcm[start : start + AUDIO_CHUNK_BYTES])
                self.audio_bytes += min(AUDIO_CHUNK_BYTES, len(pcm) - start)
                await self.send(server_event("response.output_audio.delta", **self._ids(), delta=chunk))

    async def _finish(self) -> None:
        ids = self._ids()
        if self.audio:
            await self.send(server_event("response.output_audio.done", **ids))
            await self.send(
                server_event("response.output_audio_transcript.done", **ids, transcript=self.text)
            )
        else:
            await self.send(server_event("response.output_text.done", **ids, text=self.text))
        await self.send(server_event("response.content_part.done", **ids, part=self._part()))
        item = self._item("completed")
        await self.send(
            server_event("response.output_item.done", response_id=self.id, output_index=0, item=item)
        )
        await self.send(server_event("conversation.item.done", previous_item_id=None, item=item))
        await self.send(server_event("response.done", response=self._response("completed")))


def _first(exc: BaseException) -> BaseException:
    """The first real failure out of a TaskGroup."""
    while isinstance(exc, BaseExceptionGroup):
        inner = [e for e in exc.exceptions if not isinstance(e, asyncio.CancelledError)]
        exc = inner[0] if inner else exc.exceptions[0]
    return exc
