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
from typing import Any

from gateway.conversation.emotion import PROMPT as EMOTION_PROMPT
from gateway.conversation.knowledge import (
    KnowledgeScopeError,
    KnowledgeSpecError,
    ground_turn,
    parse_turn_spec,
)
from gateway.conversation.turn import DEFAULT_SYSTEM_PROMPT
from gateway.errors import APIError
from gateway.knowledge.service import NotFound
from gateway.realtime.account import SessionAccount, account_turn, estimate_tokens
from gateway.realtime.events import (
    BadEvent,
    SessionConfig,
    error_event,
    new_id,
    parse_client_event,
    parse_max_tokens,
    parse_modalities,
    server_event,
)
from gateway.realtime.input_audio import BYTES_PER_MS, InputAudio
from gateway.realtime.items import Conversation, Item
from gateway.realtime.response import ResponseTurn, Send
from gateway.realtime.tools import (
    describe_tool_choice,
    describe_tools,
    parse_tool_choice,
    parse_tools,
)
from gateway.realtime.voice import SessionVoices, requested_voice
from policies.targets import UnknownModelError
from providers.base import ErrorKind, ProviderError

#: Not implemented yet, named so the client learns that rather than "unknown event".
NOT_YET = frozenset({"conversation.item.retrieve", "output_audio_buffer.clear"})
#: A user message in Chinese gets the Chinese filler sentence.
CJK = re.compile(r"[\u4e00-\u9fff]")


class RealtimeSession(InputAudio):
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
        voices: Any = None,
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
        key_id = account.principal.key_id if account is not None else None
        self.voices = SessionVoices(voices, tenant, key_id)  # custom: voices (gateway/realtime/voice.py)
        self.config = SessionConfig(model=model, voice=settings.voices.default)
        if session_id:
            self.config.id = session_id
        self.refused = 0  # client events refused (error events the client caused)
        self.speech_end: float | None = None  # perf_counter at the end of the last user speech
        self.transcribed: float | None = None  # ... and when its transcript was final
        self.conversation_id = new_id("conv")
        self.conversation = Conversation(send)
        self._init_input()  # buffer, VAD, live transcript (gateway/realtime/input_audio.py)
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
        self.closed = True
        self.idle.disarm()
        await self._drop_live()
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
        voice = requested_voice(session)
        if voice is not None:
            await self.voices.resolve(voice, eid)  # a refused cloned voice changes nothing
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
        self._check_transcription_model(session, eid)
        self.config.update(session, eid)
        self.config.knowledge = knowledge
        self.config.tools, self.config.tool_choice = tools, choice
        self.config.tools_wire, self.config.tool_choice_wire = (
            describe_tools(tools),
            describe_tool_choice(choice),
        )
        if self.config.turn_detection != before:
            await self._turn_detection_changed()
        await self.send(server_event("session.updated", session=self.config.describe()))

    def _check_transcription_model(self, session: Any, eid: str | None) -> None:
        """A transcription model the ASR chain does not know is refused before anything changes."""
        audio = session.get("audio") if isinstance(session, dict) else None
        inp = audio.get("input") if isinstance(audio, dict) else None
        options = inp.get("transcription") if isinstance(inp, dict) else None
        model = options.get("model") if isinstance(options, dict) else None
        if isinstance(model, str) and model and model != "default":
            try:
                self.router.resolve("asr", model)
            except UnknownModelError as exc:
                raise BadEvent(
                    str(exc), "model_not_found", "session.audio.input.transcription.model", eid
                ) from None

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
        out_of_band, context, metadata = self.conversation.response_scope(options, eid)
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
        # consent is checked again before each response: a revoked voice refuses it
        cloned = await self.voices.resolve(voice, eid) if "audio" in modalities else None
        budget = self.settings.saas.default_completion_tokens if max_tokens == "inf" else int(max_tokens)
        charged = 0
        if self.account is not None:
            history = [{"content": instructions}] + (
                context if context is not None else [{"content": i.text} for i in self.conversation.items]
            )
            try:
                charged = await self.account.admit_response(estimate_tokens(history, budget))
            except APIError as exc:
                raise BadEvent(exc.message, exc.code or "rate_limit_exceeded", None, eid, exc.type) from None
        self.response = ResponseTurn(
            send=self.send,
            router=self.router,
            messages=[{"role": "system", "content": system_prompt(instructions, config.emotion)}],
            chat_model=self.chat_model,
            voice=voice,
            audio="audio" in modalities,
            max_output_tokens=None if max_tokens == "inf" else int(max_tokens),
            temperature=config.temperature,
            describe={"conversation_id": None if out_of_band else self.conversation_id},
            output_format=config.output_format,
            tools=config.tools,
            tool_choice=config.tool_choice,
            cloned=cloned,
            out_of_band=out_of_band,
            metadata=metadata,
            emotion=config.emotion,
        )
        self.response_task = self._spawn(self._respond(self.response, charged, context))
        self.idle.disarm()

    async def _respond(
        self, turn: ResponseTurn, charged: int, context: list[dict[str, Any]] | None = None
    ) -> None:
        async def prepare() -> None:
            if context is not None:  # an out-of-band context of its own
                turn.messages += context
            else:
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
            if turn.cloned is not None and turn.audio_bytes:
                await self.voices.record(turn.cloned, turn.text, turn.ctx)
        if not turn.out_of_band and turn.started and turn.text and status != "failed":
            kind, audio_ms = ("audio", turn.audio_bytes // BYTES_PER_MS) if turn.audio else ("text", 0)
            self.conversation.add(Item(turn.item_id, "assistant", turn.text, kind=kind, audio_ms=audio_ms))
        if status == "completed" and not turn.out_of_band:
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
        if not turn.calls:  # after a tool call the client's output is awaited, not the user
            playing = 0.0
            if turn.first_audio is not None:  # the client plays the answer from its first delta
                playing = turn.first_audio + turn.audio_bytes / BYTES_PER_MS / 1000 - time.perf_counter()
            self._arm_idle(max(0.0, playing))

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
            cloned=turn.cloned,
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
        await account_turn(
            self.account,
            self.metrics,
            turn,
            status,
            charged,
            model=self.chat_model or self.config.model or None,
            speech_end=speech_end,
            transcribed=transcribed,
        )

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


def system_prompt(instructions: str, emotion: str) -> str:
    """The session's instructions (or the default persona), plus the emotion-tag request when the
    answers' emotion is "auto" (the tag is cut before speech and transcripts: conversation/answer.py)."""
    system = instructions or DEFAULT_SYSTEM_PROMPT
    return f"{system}\n{EMOTION_PROMPT}" if emotion == "auto" else system
