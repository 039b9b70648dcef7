"""The talk pipeline: (ASR →) spoken answer → render, pipelined sentence by sentence.

The spoken answer (gateway/conversation/answer.py, shared with /v1/realtime and the live
avatar) streams the LLM reply and synthesises each sentence as it completes; here each
sentence's audio is rendered and appended to one MP4 while the next is synthesised. All model calls
go through the router, so talk gets the same routing, retries and fallback as the other
endpoints. Any failure aborts the whole answer: error text is never spoken or rendered.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.conversation.answer import SpokenAnswer
from gateway.conversation.emotion import PROMPT as EMOTION_PROMPT
from gateway.conversation.knowledge import TurnGrounding
from lipsync.avatars import Avatar
from lipsync.expression import ExpressionState
from lipsync.render import RenderService, VideoBuilder
from policies.routing import StreamInterrupted
from providers.base import AudioData, ChatRequest, ProviderError, TranscribeRequest
from providers.wav import pcm16_to_float

DEFAULT_SYSTEM_PROMPT = (
    "You are a friendly digital human speaking out loud. Answer in a few short spoken sentences, "
    "without lists, markdown or emoji."
)
_DONE = object()
#: ``grounder(messages)``: the turn's knowledge-base grounding, or None (gateway/routes/talk.py).
Grounder = Callable[[list[dict[str, Any]]], Awaitable[TurnGrounding | None]]


class TalkError(Exception):
    """A request-level failure with its HTTP status (the route turns it into an API error)."""

    def __init__(self, status: int, message: str, code: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param


@dataclass(slots=True)
class TalkInput:
    avatar: Avatar
    voice: str
    text: str | None = None
    audio: AudioData | None = None
    system_prompt: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    model: str = ""
    language: str | None = None
    max_tokens: int = 256
    #: emotion: "auto" (LLM tag, else lexicon), "off", or one of emotion.EMOTIONS (forced)
    emotion: str = "auto"
    #: TTS model ("" = the route's default; a cloned voice's target model) and router skip hook
    voice_model: str = ""
    tts_skip: Any = None
    #: implicit label of the MP4/WAV, and the visible "AI" mark
    label: Any = None
    visible_mark: bool = False


@dataclass(slots=True)
class TalkResult:
    transcript: str
    reply: str
    sentences: list[str]
    timings: dict[str, float]
    render_stages: dict[str, float]
    renderer: str
    video_path: Path
    wav: bytes
    duration_s: float
    providers: dict[str, str]
    fallback: bool
    #: What the request consumed, for usage accounting and quotas.
    tokens_in: int = 0
    tokens_out: int = 0
    tts_chars: int = 0
    asr_seconds: float = 0.0
    #: ``{"citations": [...], "knowledge": {...}}`` of a grounded turn (gateway/conversation/knowledge.py)
    knowledge: dict[str, Any] | None = None
    #: the answer's emotion and where it came from ("tag", "lexicon", "request", "off")
    emotion: str = "neutral"
    emotion_source: str = "off"
    #: why the procedural renderer finished a video Wav2Lip started (its worker died), else None
    renderer_fallback: str | None = None


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 1)


class TalkPipeline:
    """One talk request. ``run`` returns the finished MP4 (at ``video_path``) and its metadata."""

    def __init__(
        self,
        router: Any,
        renders: RenderService,
        ctx: Any,
        video_path: Path,
        grounder: Grounder | None = None,
    ) -> None:
        self.router = router
        self.grounder = grounder
        self.renders = renders
        self.ctx = ctx
        self.video_path = video_path
        self.t0 = time.perf_counter()
        self.timings: dict[str, float] = {
            "asr_ms": 0.0,
            "llm_first_sentence_ms": 0.0,
            "llm_ms": 0.0,
            "tts_ms": 0.0,
            "render_ms": 0.0,
            "first_video_ms": 0.0,
            "total_ms": 0.0,
        }
        self.providers: dict[str, str] = {}
        self.fallback = False

    def _note_provider(self, stage: str) -> None:
        # Read right after the router call returned: no other task ran in between.
        if self.ctx.provider:
            self.providers[stage] = self.ctx.provider
        self.fallback = self.fallback or bool(self.ctx.fallback)

    async def run(self, inp: TalkInput) -> TalkResult:
        transcript = await self._transcribe(inp) if inp.audio is not None else (inp.text or "").strip()
        if not transcript:
            raise TalkError(400, "text is empty: there is nothing to answer", "empty_text", "text")
        system = inp.system_prompt or DEFAULT_SYSTEM_PROMPT
        if inp.emotion == "auto":
            system = f"{system}\n{EMOTION_PROMPT}"
        messages = [{"role": "system", "content": system}]
        messages += [*inp.history, {"role": "user", "content": transcript}]
        grounding = await self.grounder(messages) if self.grounder is not None else None
        canned = None
        if grounding is not None and grounding.answerable:
            messages = grounding.ground(messages)
        elif grounding is not None:
            canned = grounding.decline_text()
        request = ChatRequest(model=inp.model, messages=messages, max_tokens=inp.max_tokens)
        forced = inp.emotion not in ("auto", "off")
        expression = ExpressionState(
            inp.emotion if forced else "neutral", fps=self.renders.fps, enabled=inp.emotion != "off"
        )
        answer = SpokenAnswer(
            self.router,
            self.ctx,
            request,
            voice=inp.voice,
            language=inp.language,
            canned=canned,
            emotion=inp.emotion,
            voice_model=inp.voice_model,
            tts_skip=inp.tts_skip,
            on_emotion=lambda emotion: setattr(expression, "emotion", emotion),
        )
        builder = self.renders.builder(
            inp.avatar, self.video_path, inp.label, expression=expression, visible_mark=inp.visible_mark
        )
        speech: asyncio.Queue[Any] = asyncio.Queue(maxsize=2)  # back-pressure on TTS
        started = time.perf_counter()
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._speak(answer, speech))
                group.create_task(self._render(builder, speech))
            if not answer.sentences:
                raise TalkError(502, "the language model returned an empty reply", "empty_reply")
            await self.renders.run(builder.finish)
        except BaseException as exc:
            await asyncio.shield(self.renders.run(builder.abort))
            raise _unwrap(exc) from None
        finally:
            self._account(answer, time.perf_counter() - started)
        self.timings["total_ms"] = _ms(time.perf_counter() - self.t0)
        self.ctx.fallback = self.fallback
        if "chat" in self.providers:
            self.ctx.provider = self.providers["chat"]
        return TalkResult(
            transcript=transcript,
            reply=" ".join(answer.sentences),
            sentences=list(answer.sentences),
            timings=dict(self.timings),
            render_stages={k: _ms(v) for k, v in builder.timings.items()},
            renderer=builder.renderer.name,
            renderer_fallback=builder.fallback_reason,
            video_path=self.video_path,
            wav=builder.wav_bytes(),
            duration_s=round(builder.duration_s, 3),
            providers=dict(self.providers),
            fallback=self.fallback,
            tokens_in=answer.stats.tokens_in,
            tokens_out=answer.stats.tokens_out,
            tts_chars=answer.stats.tts_chars,
            asr_seconds=inp.audio.duration_s if inp.audio is not None else 0.0,
            knowledge=grounding.summary(answer.text) if grounding is not None else None,
            emotion=answer.emotion,
            emotion_source=answer.emotion_source,
        )

    def _account(self, answer: SpokenAnswer, elapsed_s: float) -> None:
        stats = answer.stats
        self.providers.update(stats.providers)
        self.fallback = self.fallback or stats.fallback
        self.timings["llm_first_sentence_ms"] = _ms(stats.marks.get("first_sentence", 0.0))
        self.timings["llm_ms"] = _ms(stats.marks.get("llm_done", elapsed_s))
        self.timings["tts_ms"] = _ms(stats.tts_s)

    # ------------------------------------------------------------------ stages

    async def _transcribe(self, inp: TalkInput) -> str:
        assert inp.audio is not None
        started = time.perf_counter()
        request = TranscribeRequest(model="", audio=inp.audio, language=inp.language)
        result = await self.router.transcribe(request, self.ctx)
        self._note_provider("asr")
        self.timings["asr_ms"] = _ms(time.perf_counter() - started)
        return result.text.strip()

    async def _speak(self, answer: SpokenAnswer, out: asyncio.Queue[Any]) -> None:
        try:
            async for piece in answer.pieces():
                if piece.kind == "audio":
                    await out.put(piece.audio)
        finally:
            await out.put(_DONE)

    async def _render(self, builder: VideoBuilder, speech: asyncio.Queue[Any]) -> None:
        while (audio := await speech.get()) is not _DONE:
            if not audio.pcm:
                continue
            started = time.perf_counter()
            await self.renders.run(builder.add, pcm16_to_float(audio.pcm), audio.sample_rate)
            self.timings["render_ms"] = round(
                self.timings["render_ms"] + _ms(time.perf_counter() - started), 1
            )
            if not self.timings["first_video_ms"]:
                self.timings["first_video_ms"] = _ms(time.perf_counter() - self.t0)


def _unwrap(exc: BaseException) -> BaseException:
    """The first real failure out of a TaskGroup; a broken LLM stream becomes its ProviderError."""
    while isinstance(exc, BaseExceptionGroup):
        inner = [e for e in exc.exceptions if not isinstance(e, asyncio.CancelledError)]
        exc = inner[0] if inner else exc.exceptions[0]
    if isinstance(exc, StreamInterrupted):
        cause = exc.cause
        return ProviderError(
            cause.kind,
            f"the language model failed mid-reply ({cause.message}); no partial answer was rendered",
            code=cause.code,
            provider=cause.provider,
        )
    return exc
