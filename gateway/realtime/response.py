"""One ``response.create``: the LLM answer streamed as text deltas and, with audio on, spoken.

The spoken answer itself (sentences, synthesis while the reply streams, routing) is the shared
turn core, gateway/conversation/answer.py; this module turns its pieces into Realtime events.
The whole response is one asyncio task: cancelling it (``response.cancel``, barge-in, the
socket closing) closes the answer, whose LLM and TTS calls close their upstream streams, so
generation that nobody will hear is no longer billed.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.context import RequestContext
from gateway.conversation.answer import SpokenAnswer
from gateway.realtime.audio import pcm_to_wire, to_rate
from gateway.realtime.events import (
    FORMATS,
    PCM_RATE,
    encode_pcm,
    format_object,
    message_item,
    new_id,
    server_event,
    usage_object,
)
from gateway.realtime.tools import function_call_item
from policies.routing import StreamInterrupted, UnknownModelError
from providers.base import AudioData, ChatRequest, ErrorKind, ProviderError, ToolCall

log = logging.getLogger("talkgate.realtime")
Send = Callable[[dict[str, Any]], Awaitable[None]]
#: Audio per response.output_audio.delta: 100 ms, small enough for playback to start at once,
#: large enough not to flood the socket with tiny frames.
CHUNK_MS = 100


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
        output_format: str = "audio/pcm",
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str | dict[str, Any] | None = None,
        cloned: Any = None,
        out_of_band: bool = False,
        metadata: dict[str, Any] | None = None,
        emotion: str = "off",
    ) -> None:
        self.send = send
        self.emotion = emotion
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
        self.output_format = output_format
        self.tools = tools or []
        self.tool_choice = tool_choice
        #: a cloned voice (gateway/voices/use.py ClonedVoice): ``voice`` stays its custom: name,
        #: the TTS gets its provider voice, target model and fallback policy
        self.cloned = cloned
        #: ``conversation: "none"``: nothing of it joins the conversation (no conversation.item.*)
        self.out_of_band = out_of_band
        self.metadata = metadata
        self.calls: list[tuple[str, ToolCall]] = []  # (item id, call) of the function calls made
        self.grounding: Any = None  # gateway.conversation.knowledge.TurnGrounding of the turn, if any
        self.canned: str | None = None  # a fixed answer instead of the LLM (a knowledge decline)
        self.filler = False  # a filler sentence while a client tool runs (not remembered)
        self.ctx = RequestContext(request_id=uuid.uuid4().hex)
        self.text = ""
        self.started = False  # output item announced: failures now leave an incomplete item
        self.tokens_in = 0
        self.tokens_out = 0
        self.cancel_reason: str | None = None  # client_cancelled | turn_detected, set before cancelling
        self.audio_bytes = 0  # output audio sent so far (24 kHz PCM16)
        self.answer: SpokenAnswer | None = None
        self.t0 = time.perf_counter()
        self.first_audio: float | None = None  # perf_counter when the first audio delta was sent

    # ------------------------------------------------------------------ events

    def _response(self, status: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
        output = [self._item("completed" if status == "completed" else "incomplete")] if self.started else []
        output += [function_call_item(item_id, c.id, c.name, c.arguments) for item_id, c in self.calls]
        return {
            "id": self.id,
            "object": "realtime.response",
            "status": status,
            "status_details": details,
            "output": output if status != "in_progress" else [],
            "output_modalities": ["audio" if self.audio else "text"],
            "audio": {"output": {"format": format_object(self.output_format), "voice": self.voice}},
            "conversation_id": self.describe.get("conversation_id"),
            "max_output_tokens": self.max_output_tokens or "inf",
            "metadata": {"talkgate_filler": "true"} if self.filler else self.metadata,
            "usage": usage_object(self.tokens_in, self.tokens_out) if status != "in_progress" else None,
            # talkgate's own: who answered this turn (the SDK keeps unknown fields)
            "talkgate": self._served() if status != "in_progress" else None,
        }

    def _served(self) -> dict[str, Any]:
        stats = self.answer.stats if self.answer is not None else None
        served: dict[str, Any] = {"backend": "none", "providers": {}, "fallback": False}
        if stats is not None:
            served = {
                "backend": stats.backend(),
                "providers": dict(stats.providers),
                "fallback": stats.fallback,
            }
        if self.grounding is not None:
            served.update(self.grounding.summary(self.text))  # citations and the knowledge summary
        return served

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
            if code == "internal_error":  # a bug here, not a model failure: keep its traceback
                log.exception("realtime response %s failed inside the gateway", self.id)
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
            tools=self.tools,
            tool_choice=self.tool_choice if self.tools else None,
        )
        self.answer = SpokenAnswer(
            self.router,
            self.ctx,
            request,
            voice=self.cloned.provider_voice_id if self.cloned else self.voice,
            speak=self.audio,
            sample_rate=PCM_RATE,
            canned=self.canned,
            voice_model=self.cloned.target_model if self.cloned else "",
            tts_skip=self.cloned.skip_for() if self.cloned else None,
            emotion=self.emotion,
        )
        delta_type = "response.output_audio_transcript.delta" if self.audio else "response.output_text.delta"
        pieces = self.answer.pieces()
        try:
            async for piece in pieces:
                if piece.kind == "tool_call" and piece.call is not None:
                    await self._send_call(piece.call)
                    continue
                if not self.started:
                    await self._announce()
                if piece.kind == "text":
                    self.text += piece.text
                    await self.send(server_event(delta_type, **self._ids(), delta=piece.text))
                elif piece.audio is not None:
                    await self._send_audio(piece.audio)
            if not self.started and not self.calls:
                await self._announce()  # an empty reply still has its (empty) item
        finally:
            await pieces.aclose()
            self.tokens_in, self.tokens_out = self.answer.stats.tokens_in, self.answer.stats.tokens_out

    async def _announce(self) -> None:
        self.started = True
        item = self._item("in_progress")
        await self.send(
            server_event("response.output_item.added", response_id=self.id, output_index=0, item=item)
        )
        await self._conversation_event("conversation.item.added", item)
        ids = self._ids()
        await self.send(server_event("response.content_part.added", **ids, part=self._part()))

    async def _conversation_event(self, type_: str, item: dict[str, Any]) -> None:
        if not self.out_of_band:
            await self.send(server_event(type_, previous_item_id=None, item=item))

    async def _send_call(self, call: ToolCall) -> None:
        """A function call as its own output item: added, its arguments, done."""
        item_id, index = new_id("item"), len(self.calls) + (1 if self.started else 0)
        self.calls.append((item_id, call))
        ids = {"response_id": self.id, "item_id": item_id, "output_index": index, "call_id": call.id}
        added = function_call_item(item_id, call.id, call.name, "", status="in_progress")
        await self.send(
            server_event("response.output_item.added", response_id=self.id, output_index=index, item=added)
        )
        await self._conversation_event("conversation.item.added", added)
        await self.send(server_event("response.function_call_arguments.delta", **ids, delta=call.arguments))
        await self.send(
            server_event(
                "response.function_call_arguments.done", **ids, name=call.name, arguments=call.arguments
            )
        )
        done = function_call_item(item_id, call.id, call.name, call.arguments)
        await self.send(
            server_event("response.output_item.done", response_id=self.id, output_index=index, item=done)
        )
        await self._conversation_event("conversation.item.done", done)

    async def _send_audio(self, audio: AudioData) -> None:
        pcm = await asyncio.to_thread(to_rate, audio.pcm, audio.sample_rate, PCM_RATE)
        wire = await asyncio.to_thread(pcm_to_wire, pcm, self.output_format)
        # bytes per chunk on the wire, and what a wire byte is in session (24 kHz PCM16) bytes
        step = (
            FORMATS[self.output_format] * CHUNK_MS // 1000 * (2 if self.output_format == "audio/pcm" else 1)
        )
        ratio = len(pcm) / len(wire) if wire else 0.0
        for start in range(0, len(wire), step):
            piece = wire[start : start + step]
            self.audio_bytes += round(len(piece) * ratio)
            delta = encode_pcm(piece)
            await self.send(server_event("response.output_audio.delta", **self._ids(), delta=delta))
            if self.first_audio is None:
                self.first_audio = time.perf_counter()

    async def _finish(self) -> None:
        if not self.started:  # only function calls
            await self.send(server_event("response.done", response=self._response("completed")))
            return
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
        await self._conversation_event("conversation.item.done", item)
        await self.send(server_event("response.done", response=self._response("completed")))


def _first(exc: BaseException) -> BaseException:
    """The first real failure out of a TaskGroup."""
    while isinstance(exc, BaseExceptionGroup):
        inner = [e for e in exc.exceptions if not isinstance(e, asyncio.CancelledError)]
        exc = inner[0] if inner else exc.exceptions[0]
    return exc
