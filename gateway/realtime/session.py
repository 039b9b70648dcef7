"""One realtime connection: its configuration, conversation, input audio buffer and response task.

The session turns client events into state changes and model calls, and reports through a
``send`` callback; it never touches the socket, so the same core can serve a WebRTC data
channel later. Refused events become ``error`` events and the session stays open: a client
bug in one event should not cost the conversation. The conversation lives in memory for the
life of the connection (a realtime session is sticky to one replica, design.md round 2).
"""

from __future__ import annotations

import asyncio
import re
import time
from functools import partial
from typing import Any

from gateway.conversation.knowledge import (
    KnowledgeScopeError,
    KnowledgeSpecError,
    ground_turn,
    parse_turn_spec,
)
from gateway.conversation.turn import DEFAULT_SYSTEM_PROMPT
from gateway.errors import APIError
from gateway.knowledge.service import NotFound
from gateway.realtime.account import SessionAccount, estimate_tokens
from gateway.realtime.audio import wire_to_pcm
from gateway.realtime.events import (
    PCM_RATE,
    BadEvent,
    SessionConfig,
    decode_pcm,
    error_event,
    message_item,
    new_id,
    parse_client_event,
    parse_max_tokens,
    parse_modalities,
    server_event,
)
from gateway.realtime.items import Conversation, Item
from gateway.realtime.response import ResponseTurn, Send
from gateway.realtime.tools import (
    describe_tool_choice,
    describe_tools,
    parse_tool_choice,
    parse_tools,
)
from gateway.realtime.transcription import transcribe_item
from gateway.realtime.vad import SpeechDetector
from providers.base import ErrorKind, ProviderError

#: The input buffer holds at most ``settings.limits.audio_max_seconds["realtime"]`` (120 s by
#: default: 5.76 MB of 24 kHz PCM16), the shared per-surface audio limit (gateway/inputs/audio.py).
AUDIO_SURFACE = "realtime"
#: Shortest committable audio, as OpenAI: 100 ms.
MIN_COMMIT_BYTES = PCM_RATE // 10 * 2
#: Not implemented yet, named so the client learns that rather than "unknown event".
NOT_YET = frozenset({"conversation.item.retrieve", "output_audio_buffer.clear"})
#: A user message in Chinese gets the Chinese filler sentence.
CJK = re.compile(r"[\u4e00-\u9fff]")
#: Bytes of 24 kHz PCM16 per millisecond.
BYTES_PER_MS = PCM_RATE * 2 // 1000


class RealtimeSession:
    def __init__(
        self,
        send: Send,
        router: Any,
        settings: Any,
        model: str,
        chat_model: str,
        *,
        account: SessionAccount | None = None,
        metrics: Any = None,
        session_id: str | None = None,
        vad_scorer: Any = None,
        retriever: Any = None,
        tenant: str = "default",
    ) -> None:
        self.send = send
        self.router = router
        self.settings = settings
        self.chat_model = chat_model
        self.account = account
        self.metrics = metrics
        self.vad_scorer = vad_scorer
        self.retriever = retriever  # knowledge grounding (gateway/conversation/knowledge.py)
        self.tenant = tenant
        self.config = SessionConfig(model=model, voice=settings.voices.default)
        if session_id:
            self.config.id = session_id
        self.refused = 0  # client events refused (error events the client caused)
        self.speech_end: float | None = None  # perf_counter at the end of the last user speech
        self.transcribed: float | None = None  # ... and when its transcript was final
        self.conversation_id = new_id("conv")
        self.conversation = Conversation(send)
        self.buffer = bytearray()
        self.audio_in = 0  # bytes appended in the session; the buffer holds the last of them
        self.vad: SpeechDetector | None = None
        self.vad_origin_ms = 0  # session audio time where the detector started
        self.speech_item: str | None = None  # item id announced by speech_started
        self.response: ResponseTurn | None = None
        self.response_task: asyncio.Task[None] | None = None
        self.tasks: set[asyncio.Task[Any]] = set()
        self.handlers = {
            "session.update": self._session_update,
            "input_audio_buffer.append": self._append,
            "input_audio_buffer.commit": self._commit,
            "input_audio_buffer.clear": self._clear,
            "conversation.item.create": self.conversation.create,
            "conversation.item.delete": self.conversation.delete,
            "conversation.item.truncate": self.conversation.truncate,
            "response.create": self._response_create,
            "response.cancel": self._response_cancel,
        }

    async def start(self) -> None:
        await self.send(server_event("session.created", session=self.config.describe()))

    async def handle(self, raw: str | bytes) -> None:
        """One client frame; every refusal is answered with an ``error`` event."""
        event: dict[str, Any] = {}
        try:
            event = parse_client_event(raw)
            handler = self.handlers.get(event["type"])
            if handler is None:
                kind = "is not available yet" if event["type"] in NOT_YET else "is not a known client event"
                raise BadEvent(f"'{event['type'][:64]}' {kind}.", "unknown_event", "type")
            await handler(event)
        except BadEvent as exc:
            self.refused += 1
            client_id = exc.event_id or (
                event.get("event_id") if isinstance(event.get("event_id"), str) else None
            )
            await self.send(error_event(exc.message, exc.code, exc.param, client_id, exc.type))

    async def close(self) -> None:
        """Cancels every task of the session (the response, pending transcriptions)."""
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    @property
    def _principal(self) -> Any:
        """The caller (scopes, default stores); None in process (tests): every scope, no default."""
        return self.account.principal if self.account is not None else None

    # ------------------------------------------------------------------ session and items

    async def _session_update(self, event: dict[str, Any]) -> None:
        before = self.config.turn_detection
        session, eid = event.get("session"), event.get("event_id")
        tools, choice = self.config.tools, self.config.tool_choice
        if isinstance(session, dict):  # checked before anything changes: an update is all-or-nothing
            if "tools" in session:
                tools = parse_tools(session["tools"] or [], eid)
            if "tool_choice" in session:
                choice = parse_tool_choice(session["tool_choice"], tools, eid)
            elif "tools" in session:
                choice = parse_tool_choice(describe_tool_choice(choice), tools, eid)
        knowledge = self.config.knowledge
        if isinstance(session, dict) and "knowledge" in session:  # talkgate's own field
            try:
                knowledge = parse_turn_spec(session["knowledge"], self._principal, "session.knowledge")
            except KnowledgeSpecError as exc:
                raise BadEvent(str(exc), "invalid_value", exc.param, eid) from None
            except KnowledgeScopeError as exc:
                raise BadEvent(str(exc), "insufficient_scope", exc.param, eid, "permission_error") from None
            if knowledge is not None and knowledge["vector_store_ids"] and self.retriever is None:
                raise BadEvent(
                    "The knowledge base is not enabled on this gateway.",
                    "knowledge_disabled",
                    "session.knowledge",
                    eid,
                )
        self.config.update(session, eid)
        self.config.knowledge = knowledge
        self.config.tools, self.config.tool_choice = tools, choice
        self.config.tools_wire, self.config.tool_choice_wire = (
            describe_tools(tools),
            describe_tool_choice(choice),
        )
        vad = self.config.turn_detection
        if vad != before:
            self.speech_item = None
            self.vad = None
            if vad is not None:
                self.vad_origin_ms = self.audio_in // BYTES_PER_MS
                self.vad = await asyncio.to_thread(
                    partial(SpeechDetector, scorer=self.vad_scorer),
                    vad["threshold"],
                    vad["prefix_padding_ms"],
                    vad["silence_duration_ms"],
                )
        await self.send(server_event("session.updated", session=self.config.describe()))

    async def _append(self, event: dict[str, Any]) -> None:
        kind = self.config.input_format
        pcm = decode_pcm(event.get("audio"), "audio", event.get("event_id"), kind)
        if kind != "audio/pcm":
            pcm = await asyncio.to_thread(wire_to_pcm, pcm, kind)
        seconds = self.settings.limits.audio_seconds(AUDIO_SURFACE)
        if len(self.buffer) + len(pcm) > seconds * PCM_RATE * 2:
            raise BadEvent(
                f"The input audio buffer is full ({seconds:g} s): commit or clear it.",
                "input_audio_buffer_full",
                "audio",
                event.get("event_id"),
            )
        self.buffer += pcm
        self.audio_in += len(pcm)
        if self.vad is not None:
            for name, ms in await asyncio.to_thread(self.vad.feed, pcm):
                await self._vad_event(name, self.vad_origin_ms + ms)
            if not self.vad.speaking:  # only the prefix padding before speech is ever committed
                keep = (self.config.turn_detection or {}).get("prefix_padding_ms", 0) + 100
                self._drop_before(self.audio_in - keep * BYTES_PER_MS)

    def _drop_before(self, offset: int) -> None:
        """Drops buffered audio before session byte ``offset`` (whole samples)."""
        cut = offset - (self.audio_in - len(self.buffer))
        if cut > 0:
            del self.buffer[: cut - cut % 2]

    async def _vad_event(self, name: str, ms: int) -> None:
        if name == "speech_started":
            self._drop_before(ms * BYTES_PER_MS)
            self.speech_item = new_id("item")
            await self.send(
                server_event("input_audio_buffer.speech_started", audio_start_ms=ms, item_id=self.speech_item)
            )
            task, turn = self.response_task, self.response
            vad = self.config.turn_detection or {}
            if vad.get("interrupt_response") and task and not task.done() and turn:
                turn.cancel_reason = "turn_detected"  # barge-in
                task.cancel()
                if self.metrics is not None:
                    self.metrics.barge_ins.inc()
            return
        item_id, self.speech_item = self.speech_item or new_id("item"), None
        self.speech_end = time.perf_counter()
        await self.send(server_event("input_audio_buffer.speech_stopped", audio_end_ms=ms, item_id=item_id))
        end = ms * BYTES_PER_MS - (self.audio_in - len(self.buffer))
        end = max(0, min(len(self.buffer), end - end % 2))
        if end < MIN_COMMIT_BYTES:
            return  # a click, not a turn
        pcm = bytes(self.buffer[:end])
        del self.buffer[:end]
        await self._commit_audio(pcm, item_id)
        busy = self.response_task is not None and not self.response_task.done()
        if (self.config.turn_detection or {}).get("create_response") and not busy:
            await self._response_create({})

    async def _clear(self, event: dict[str, Any]) -> None:
        self.buffer.clear()
        if self.vad is not None:
            self.vad.reset_speech()
            self.speech_item = None
        await self.send(server_event("input_audio_buffer.cleared"))

    async def _commit(self, event: dict[str, Any]) -> None:
        if len(self.buffer) < MIN_COMMIT_BYTES:
            ms = len(self.buffer) * 1000 // (PCM_RATE * 2)
            raise BadEvent(
                f"Error committing input audio buffer: at least 100 ms of audio is needed, the buffer has {ms} ms.",
                "input_audio_buffer_commit_empty",
                None,
                event.get("event_id"),
            )
        pcm, self.buffer = bytes(self.buffer), bytearray()
        self.speech_end = time.perf_counter()
        item_id, self.speech_item = self.speech_item or new_id("item"), None
        if self.vad is not None:
            self.vad.reset_speech()
        await self._commit_audio(pcm, item_id)

    async def _commit_audio(self, pcm: bytes, item_id: str) -> None:
        item = Item(item_id, "user", "", kind="input_audio")
        previous = self.conversation.add(item)
        await self.send(
            server_event("input_audio_buffer.committed", previous_item_id=previous, item_id=item.id)
        )
        wire = message_item(item.id, "user", "", kind="input_audio")
        await self.send(server_event("conversation.item.added", previous_item_id=previous, item=wire))
        item.transcription = self._spawn(self._transcribe(item, pcm, previous))

    async def _transcribe(self, item: Item, pcm: bytes, previous: str | None) -> None:
        if await transcribe_item(
            item, pcm, previous, router=self.router, account=self.account, send=self.send
        ):
            self.transcribed = time.perf_counter()

    # ------------------------------------------------------------------ responses

    async def _response_create(self, event: dict[str, Any]) -> None:
        eid = event.get("event_id")
        if self.response is not None and self.response.filler and self.response_task is not None:
            self.response.cancel_reason = "client_cancelled"  # a filler gives way to the real answer
            self.response_task.cancel()
            await asyncio.wait([self.response_task])
        if self.response_task is not None and not self.response_task.done():
            raise BadEvent(
                f"Conversation already has an active response in progress: {self.response.id if self.response else ''}.",
                "conversation_already_has_active_response",
                None,
                eid,
            )
        options = event.get("response") or {}
        if not isinstance(options, dict):
            raise BadEvent("'response' must be an object.", "invalid_value", "response", eid)
        if options.get("conversation", "auto") != "auto" or options.get("input") is not None:
            raise BadEvent(
                "Out-of-band responses are not available yet.", "unsupported", "response.conversation", eid
            )
        config = self.config
        modalities = config.output_modalities
        if "output_modalities" in options:
            modalities = parse_modalities(options["output_modalities"], "response.output_modalities", eid)
        max_tokens = config.max_output_tokens
        if "max_output_tokens" in options:
            max_tokens = parse_max_tokens(options["max_output_tokens"], "response.max_output_tokens", eid)
        instructions = options.get("instructions", config.instructions)
        if not isinstance(instructions, str):
            raise BadEvent(
                "'response.instructions' must be a string.", "invalid_value", "response.instructions", eid
            )
        voice = self.settings.voices.aliases.get(config.voice, config.voice)
        budget = self.settings.saas.default_completion_tokens if max_tokens == "inf" else int(max_tokens)
        charged = 0
        if self.account is not None:
            history = [{"content": instructions}] + [{"content": i.text} for i in self.conversation.items]
            try:
                charged = await self.account.admit_response(estimate_tokens(history, budget))
            except APIError as exc:
                raise BadEvent(exc.message, exc.code or "rate_limit_exceeded", None, eid, exc.type) from None
        self.response = ResponseTurn(
            send=self.send,
            router=self.router,
            messages=[{"role": "system", "content": instructions or DEFAULT_SYSTEM_PROMPT}],
            chat_model=self.chat_model,
            voice=voice,
            audio="audio" in modalities,
            max_output_tokens=None if max_tokens == "inf" else int(max_tokens),
            temperature=config.temperature,
            describe={"conversation_id": self.conversation_id},
            output_format=config.output_format,
            tools=config.tools,
            tool_choice=config.tool_choice,
        )
        self.response_task = self._spawn(self._respond(self.response, charged))

    async def _respond(self, turn: ResponseTurn, charged: int) -> None:
        async def prepare() -> None:
            # Spoken questions are answered once transcribed: wait for pending transcriptions.
            pending = self.conversation.pending_transcriptions()
            if pending:  # asyncio.wait, not gather: a cancelled response leaves them running
                await asyncio.wait(pending)
            turn.messages += self.conversation.messages()
            await self._ground(turn)

        status = "cancelled"
        speech_end, self.speech_end = self.speech_end, None  # the speech this turn answers, if any
        try:
            status = await turn.run(prepare)
        finally:
            await self._account_turn(turn, status, charged, speech_end, self.transcribed)
        if turn.started and turn.text and status != "failed":
            kind, audio_ms = ("audio", turn.audio_bytes // BYTES_PER_MS) if turn.audio else ("text", 0)
            self.conversation.add(Item(turn.item_id, "assistant", turn.text, kind=kind, audio_ms=audio_ms))
        if status == "completed":
            for item_id, call in turn.calls:
                self.conversation.add(
                    Item(
                        item_id,
                        "assistant",
                        call.arguments,
                        kind="function_call",
                        call_id=call.id,
                        name=call.name,
                    )
                )
            after = self.settings.realtime.tool_filler_after_s
            if turn.calls and turn.audio and after is not None:
                self._spawn(self._filler_after(turn, after))

    async def _filler_after(self, turn: ResponseTurn, after_s: float) -> None:
        """One short filler sentence while the client's tool runs longer than ``after_s``.
        It is spoken as its own response (``metadata.talkgate_filler``), is not remembered in
        the conversation, and gives way at once to the client's next ``response.create``."""
        await asyncio.sleep(after_s)
        answered = {i.call_id for i in self.conversation.items if i.kind == "function_call_output"}
        busy = self.response_task is not None and not self.response_task.done()
        if busy or all(call.id in answered for _, call in turn.calls):
            return
        texts = self.settings.realtime.tool_filler_text
        last = next((m["content"] for m in reversed(turn.messages) if m.get("role") == "user"), "")
        text = texts.get("zh" if CJK.search(str(last or "")) else "en") or texts.get("en", "")
        if not text:
            return
        filler = ResponseTurn(
            send=self.send,
            router=self.router,
            messages=[],
            chat_model=self.chat_model,
            voice=turn.voice,
            audio=True,
            max_output_tokens=None,
            temperature=None,
            describe={"conversation_id": self.conversation_id},
            output_format=self.config.output_format,
        )
        filler.canned, filler.filler = text, True
        self.response = filler
        self.response_task = self._spawn(self._speak_filler(filler))

    async def _speak_filler(self, filler: ResponseTurn) -> None:
        status = "cancelled"
        try:
            status = await filler.run()
        finally:
            await self._account_turn(filler, status, 0, None, None)

    async def _ground(self, turn: ResponseTurn) -> None:
        """Knowledge grounding of the turn: passages into the prompt, or the fixed decline."""
        try:
            grounding = await ground_turn(
                self.retriever,
                self.settings,
                self.tenant,
                self.config.knowledge,
                turn.messages,
                turn.ctx,
                self._principal,
            )
        except NotFound as exc:
            raise ProviderError(ErrorKind.BAD_REQUEST, str(exc), code="vector_store_not_found") from None
        turn.grounding = grounding
        if grounding is not None and grounding.answerable:
            turn.messages = grounding.ground(turn.messages)
        elif grounding is not None:
            turn.canned = grounding.decline_text()

    async def _account_turn(
        self,
        turn: ResponseTurn,
        status: str,
        charged: int,
        speech_end: float | None,
        transcribed: float | None,
    ) -> None:
        """The turn's usage row (whatever its end: a dropped session books what was produced)
        and its metrics."""
        stats = turn.answer.stats if turn.answer is not None else None
        if self.account is not None:
            await self.account.book(
                turn.id,
                charged,
                tokens_in=turn.tokens_in,
                tokens_out=turn.tokens_out,
                characters=stats.tts_chars if stats else 0,
                provider=stats.providers.get("chat") if stats else None,
                model=self.chat_model or self.config.model or None,
                fallback=stats.fallback if stats else False,
                latency_ms=(time.perf_counter() - turn.t0) * 1000.0,
                status={"completed": 200, "cancelled": 499}.get(status, 502),
            )
        if self.metrics is None or stats is None:
            return
        stages = {k: v for k, v in stats.marks.items() if k in ("llm_first_token", "tts_first_audio")}
        if speech_end is not None:
            if transcribed is not None and transcribed >= speech_end:
                stages["asr"] = transcribed - speech_end
            if turn.first_audio is not None:
                stages["first_audio"] = turn.first_audio - speech_end
        self.metrics.turn(status, stats.backend(), stats.fallback, stages)

    async def _response_cancel(self, event: dict[str, Any]) -> None:
        task, turn = self.response_task, self.response
        wanted = event.get("response_id")
        if task is None or task.done() or turn is None or (wanted and wanted != turn.id):
            raise BadEvent(
                "Cancellation failed: no active response found.",
                "response_cancel_not_active",
                None,
                event.get("event_id"),
            )
        turn.cancel_reason = "client_cancelled"
        task.cancel()
