"""One spoken answer: the LLM stream cut into sentences, each sentence synthesised as it completes.

This is the shared middle of every turn (design.md, round 2): ``/v1/talk`` renders the audio
into an MP4, ``/v1/realtime`` sends it as audio deltas, the live avatar puts it on its tracks.
The wire formats stay with those callers; here there are only pieces: text as it streams and
audio as each sentence is synthesised, in the order they are ready.

Two tasks run concurrently, the LLM reader and the TTS writer, joined by a sentence queue, so
the first audio leaves while the reply is still being generated. All calls go through the
router (chains, retries, breakers, fallback). Closing the iterator early (barge-in, a client
gone) cancels both tasks, which closes the upstream streams: nobody pays for unheard speech.
Failures surface from the iterator; what was already yielded stays yielded, and nothing after
the failure is spoken.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.conversation.emotion import TagStripper, classify, voice_params
from gateway.conversation.sentences import SentenceSplitter, clean_for_speech, speakable
from gateway.streaming import StreamMeter
from gateway.structured.answers import assemble
from gateway.structured.streams import open_chat_stream
from providers.base import (
    AudioData,
    ChatChunk,
    ChatRequest,
    ErrorKind,
    ProviderError,
    SynthesizeRequest,
    ToolCall,
    Usage,
)

_DONE = object()
#: The first spoken piece may end at a clause mark once it is this long (sentences.py): shorter
#: than "Of course," stays with its sentence, so a lone word is not synthesised on its own.
FIRST_PHRASE_CHARS = 12
#: The "provider" of a canned answer: the gateway itself (as grounded chat books a decline).
CANNED_PROVIDER = "talkgate:knowledge"


async def _one_chunk(text: str) -> AsyncIterator[ChatChunk]:
    yield ChatChunk(delta=text, finish_reason="stop", usage=Usage())


@dataclass(slots=True)
class AnswerPiece:
    """``text``: a streamed delta of the reply. ``audio``: one sentence, spoken. ``tool_call``:
    a whole function call the model asked for (after the text, once the stream has ended)."""

    kind: str  # "text" | "audio" | "tool_call"
    text: str = ""
    audio: AudioData | None = None
    call: ToolCall | None = None


@dataclass(slots=True)
class AnswerStats:
    """What the answer used and who served it, for usage rows, metrics and the client."""

    tokens_in: int = 0
    tokens_out: int = 0
    tts_chars: int = 0
    providers: dict[str, str] = field(default_factory=dict)  # stage -> "bailian:qwen-plus"
    fallback: bool = False
    #: Seconds since the answer started: llm_first_token, first_sentence, tts_first_audio, llm_done.
    marks: dict[str, float] = field(default_factory=dict)
    tts_s: float = 0.0  # summed synthesis time

    def backend(self) -> str:
        """``cloud``, ``local`` or ``mixed`` across the stages that answered."""
        kinds = {p.split(":", 1)[0] for p in self.providers.values()} - {"talkgate"}
        if not kinds:
            return "gateway" if self.providers else "none"
        if kinds <= {"local"}:
            return "local"
        return "cloud" if "local" not in kinds else "mixed"


class SpokenAnswer:
    """Iterate ``pieces()`` once; ``sentences`` and ``stats`` fill in as it runs."""

    def __init__(
        self,
        router: Any,
        ctx: Any,
        request: ChatRequest,
        *,
        voice: str,
        speak: bool = True,
        language: str | None = None,
        sample_rate: int | None = None,
        skip: Any = None,
        metrics: Any = None,
        canned: str | None = None,
        emotion: str = "off",
        voice_model: str = "",
        tts_skip: Any = None,
        on_emotion: Callable[[str], None] | None = None,
    ) -> None:
        self.router = router
        self.skip = skip  # targets the request may not use (gateway/routes/chat.py target_skip)
        self.metrics = metrics
        #: a fixed answer spoken without a model call (a knowledge-base decline)
        self.canned = canned
        #: "auto" (the LLM's leading tag, else the lexicon), "off", or a fixed emotion
        #: (gateway/conversation/emotion.py); decided once, at the first sentence
        self.emotion_mode = emotion
        self.emotion, self.emotion_source = (
            (emotion, "request") if emotion not in ("auto", "off") else ("neutral", "off")
        )
        self.on_emotion = on_emotion
        self.voice_model = voice_model  # a cloned voice's target model ("" = the route's default)
        self.tts_skip = tts_skip  # targets a cloned voice may not fall back to (its consent policy)
        self._tags = TagStripper()
        self.ctx = ctx
        self.request = request
        self.voice = voice
        self.speak = speak
        self.language = language
        self.sample_rate = sample_rate
        self.text = ""
        self.sentences: list[str] = []
        self.calls: list[ToolCall] = []
        self.stats = AnswerStats()
        #: counts what was produced, so an answer cut short (barge-in, a dropped client) is
        #: still billed: the provider's usage when it came, else estimates
        self.meter = StreamMeter(request.messages)
        self._t0 = time.perf_counter()

    def _mark(self, name: str) -> None:
        self.stats.marks.setdefault(name, time.perf_counter() - self._t0)

    def _note(self, stage: str) -> None:
        # Read right after the router call returned: no other task ran in between.
        if self.ctx.provider:
            self.stats.providers[stage] = self.ctx.provider
        self.stats.fallback = self.stats.fallback or bool(self.ctx.fallback)

    async def pieces(self) -> AsyncIterator[AnswerPiece]:
        out: asyncio.Queue[Any] = asyncio.Queue()
        sentences: asyncio.Queue[Any] = asyncio.Queue()
        if self.canned is not None:
            stream = _one_chunk(self.canned)
            self.stats.providers["chat"] = CANNED_PROVIDER
        else:
            stream = await open_chat_stream(self.router, self.request, self.ctx, self.skip, self.metrics)
            self._note("chat")
        tasks = [asyncio.create_task(self._read(stream, sentences, out))]
        if self.speak:
            tasks.append(asyncio.create_task(self._synthesise(sentences, out)))
        running = len(tasks)
        try:
            while running:
                item = await out.get()
                if item is _DONE:
                    running -= 1
                elif isinstance(item, BaseException):
                    raise item
                else:
                    yield item
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                await stream.aclose()
            if self.canned is None:  # a canned answer used no model: nothing to bill
                self.stats.tokens_in, self.stats.tokens_out = self.meter.tokens()

    async def _read(self, stream: Any, sentences: asyncio.Queue[Any], out: asyncio.Queue[Any]) -> None:
        splitter = SentenceSplitter(first_phrase_chars=FIRST_PHRASE_CHARS)
        call_chunks: list[ChatChunk] = []

        async def emit(sentence: str) -> None:
            if not self.sentences:
                self._mark("first_sentence")
                self._decide_emotion(sentence)
            self.sentences.append(sentence)
            spoken = clean_for_speech(sentence)
            if self.speak and speakable(spoken):
                await sentences.put(spoken)

        try:
            async for chunk in stream:
                if chunk.usage is not None:
                    self.meter.usage = chunk.usage
                if chunk.finish_reason == "content_filter":
                    raise ProviderError(
                        ErrorKind.CONTENT_FILTERED,
                        "the reply was stopped by the content-safety filter",
                        provider=self.stats.providers.get("chat"),
                    )
                if chunk.tool_calls:
                    call_chunks.append(chunk)
                if not chunk.delta:
                    continue
                self._mark("llm_first_token")
                self.meter.parts.append(chunk.delta)
                # a leading emotion tag is cut here: it never reaches TTS, subtitles or transcripts
                delta = self._tags.feed(chunk.delta) if self.emotion_mode == "auto" else chunk.delta
                await self._text(delta, splitter, emit, out)
            await self._text(self._tags.flush(), splitter, emit, out)
            for sentence in splitter.flush():
                await emit(sentence)
            self._mark("llm_done")
            self.calls = assemble(call_chunks).tool_calls if call_chunks else []
            for call in self.calls:
                await out.put(AnswerPiece("tool_call", call=call))
        except Exception as exc:
            await out.put(exc)
        finally:
            await sentences.put(_DONE)
            await out.put(_DONE)

    async def _text(self, delta: str, splitter: SentenceSplitter, emit: Any, out: asyncio.Queue[Any]) -> None:
        if not delta:
            return
        self.text += delta
        await out.put(AnswerPiece("text", text=delta))
        for sentence in splitter.feed(delta):
            await emit(sentence)

    def _decide_emotion(self, first_sentence: str) -> None:
        """One emotion per answer, known at the first sentence: the tag, else the lexicon."""
        if self.emotion_mode == "auto":
            if self._tags.tag is not None:
                self.emotion, self.emotion_source = self._tags.tag, "tag"
            else:
                self.emotion, self.emotion_source = classify(first_sentence), "lexicon"
        if self.on_emotion is not None:
            self.on_emotion(self.emotion)

    async def _synthesise(self, sentences: asyncio.Queue[Any], out: asyncio.Queue[Any]) -> None:
        try:
            while (text := await sentences.get()) is not _DONE:
                started = time.perf_counter()
                extra = voice_params(self.emotion) if self.emotion_source != "off" else {}
                request = SynthesizeRequest(
                    model=self.voice_model,
                    text=text,
                    voice=self.voice,
                    language=self.language,
                    sample_rate=self.sample_rate,
                    speed=float(extra.get("speed", 1.0)),
                    extra=extra,
                )
                result = await self.router.synthesize(request, self.ctx, skip=self.tts_skip)
                self._note("tts")
                self.stats.tts_chars += len(text)
                self.stats.tts_s += time.perf_counter() - started
                self._mark("tts_first_audio")
                await out.put(AnswerPiece("audio", text=text, audio=result.audio))
        except Exception as exc:
            await out.put(exc)
        finally:
            await out.put(_DONE)
