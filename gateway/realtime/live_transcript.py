"""The user's speech transcribed while it is spoken (server VAD), for one announced item.

Opened at ``input_audio_buffer.speech_started`` with the item id announced there (the one later
committed), fed the session's 24 kHz input resampled to 16 kHz as it is appended, and finished
at the commit. It reads ``Router.transcribe_stream`` (policies/asr_stream.py): partials of the
first streaming recogniser of the ASR chain, and, when that fails or none can stream, the whole
utterance transcribed by the chain after the commit, so the turn always gets its transcript.

Each partial that extends the text already sent goes out as
``conversation.item.input_audio_transcription.delta`` (OpenAI's deltas only append). A partial
that revises earlier words is not sent; later partials are sent again once they extend what the
client has, and the ``.completed`` event (gateway/realtime/transcription.py) always carries the
final transcript, which is authoritative. Cancelling (``input_audio_buffer.clear``, a click too
short to commit, turn detection switched, the session closing) closes the upstream stream at
once: its WebSocket is closed, not returned to the pool.

Early transcription (``speculate``: the chain has no streaming recogniser, as offline): Whisper
answers only whole utterances, and it costs a few hundred milliseconds (its encoder always works
on 30 s windows). So when the VAD's closing silence has begun (``pause``), the speech heard so far
is transcribed at once, while the VAD still waits out its ``silence_duration_ms``; speech going on
cancels that guess. If the turn ends at that pause, ``finish`` answers with the guess (the words
are the same: only silence came after), so the transcript is ready when the turn is committed
instead of a Whisper run later.

Neither the stream nor a guess starts before ``admit`` (the session account's quota check) has
passed: a tenant whose ASR seconds are used up sends no audio upstream, and the commit then
refuses the turn with ``insufficient_quota``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from gateway.context import RequestContext
from gateway.realtime.audio import Resampler
from gateway.realtime.events import DEFAULT_TRANSCRIPTION, PCM_RATE, server_event
from providers.base import AudioData, ErrorKind, ProviderError, TranscribeRequest, Transcript

#: The recognisers are fed 16 kHz (what Paraformer and Whisper are trained on).
ASR_RATE = 16000


def request_for(options: dict[str, Any] | None, audio: AudioData) -> TranscribeRequest:
    """The ASR request of a session's transcription options (model "default": the chain's)."""
    options = options or DEFAULT_TRANSCRIPTION
    model = options.get("model") or "default"
    return TranscribeRequest(
        model="" if model == "default" else model,
        audio=audio,
        language=options.get("language"),
        prompt=options.get("prompt"),
    )


class LiveTranscript:
    def __init__(
        self,
        item_id: str,
        *,
        router: Any,
        send: Any,
        speculate: bool = False,
        on_guess: Callable[[str], None] | None = None,
        options: dict[str, Any] | None = DEFAULT_TRANSCRIPTION,
        admit: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.item_id = item_id
        self.send = send
        self.router = router
        self.ctx = RequestContext(request_id=uuid.uuid4().hex)
        self.speculate = speculate
        self.on_guess = on_guess  # called with "used" or "discarded" (metrics)
        self._heard = bytearray()  # 16 kHz audio fed so far (kept only to speculate)
        self._guess: asyncio.Task[tuple[Transcript, RequestContext]] | None = None
        self.sent = ""  # text sent as deltas so far
        self.partials = 0
        self._audio: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._resampler = Resampler(ASR_RATE)
        self._ended = False
        self.options = options  # the session's transcription settings (None: no delta events)
        request = request_for(options, AudioData(b"", ASR_RATE))
        self._admitted = asyncio.ensure_future(admit() if admit is not None else asyncio.sleep(0))
        self._task = asyncio.create_task(self._run(router, request))

    def feed(self, pcm: bytes) -> None:
        """24 kHz PCM16 appended to the input buffer during the speech."""
        if pcm and not self._ended:
            chunk = self._resampler.pcm(pcm, PCM_RATE)
            if self.speculate:
                self._heard += chunk
            self._audio.put_nowait(chunk)

    def pause(self, paused: bool) -> None:
        """The VAD's closing silence has begun (True) or the speech went on (False)."""
        if not self.speculate or self._ended:
            return
        if paused and self._guess is None and self._heard:
            self._guess = asyncio.create_task(self._transcribe_whole(bytes(self._heard)))
        elif not paused and self._guess is not None:
            self._discard_guess()

    def _discard_guess(self) -> None:
        if self._guess is not None:
            self._guess.cancel()
            self._guess = None
            self._count("discarded")

    def _count(self, outcome: str) -> None:
        if self.on_guess is not None:
            self.on_guess(outcome)

    async def _transcribe_whole(self, pcm: bytes) -> tuple[Transcript, RequestContext]:
        await asyncio.shield(self._admitted)
        ctx = RequestContext(request_id=self.ctx.request_id)
        request = request_for(self.options, AudioData(pcm, ASR_RATE))
        return await self.router.transcribe(request, ctx), ctx

    async def finish(self) -> Transcript:
        """End of the utterance: waits for the final transcript (raises as the chain did)."""
        if self._guess is not None:  # the turn ended at the pause the guess started at
            return await self._take_guess()
        if not self._ended:
            self._ended = True
            self._audio.put_nowait(self._resampler.frame(None))
            self._audio.put_nowait(None)
        return await self._task

    async def _take_guess(self) -> Transcript:
        guess, self._guess = self._guess, None
        assert guess is not None
        self._ended = True
        self._task.cancel()  # offline it is only waiting for the audio's end: no work is lost
        await asyncio.wait([self._task])
        try:
            result, ctx = await guess
        except ProviderError:  # the guess failed: the whole utterance, as the stream would have
            result, ctx = await self._transcribe_whole(bytes(self._heard))
        self.ctx.provider, self.ctx.fallback = ctx.provider, ctx.fallback
        self.ctx.upstream_s += ctx.upstream_s
        self._count("used")
        return result

    async def cancel(self) -> None:
        """Abandons the utterance and its upstream stream."""
        self._ended = True
        guess = self._guess
        self._discard_guess()
        self._task.cancel()
        self._admitted.cancel()
        tasks = [self._task, self._admitted] + ([guess] if guess is not None else [])
        await asyncio.wait(tasks)
        for task in tasks:  # a refusal or a failed stream nobody will read now: not an unread error
            if not task.cancelled():
                task.exception()

    async def _chunks(self) -> AsyncIterator[bytes]:
        while (chunk := await self._audio.get()) is not None:
            if chunk:
                yield chunk

    async def _run(self, router: Any, request: TranscribeRequest) -> Transcript:
        await asyncio.shield(self._admitted)
        parts = router.transcribe_stream(request, self._chunks(), self.ctx)
        try:
            async for part in parts:
                await self._delta(part.text)
                if part.final and part.transcript is not None:
                    return part.transcript
        finally:
            await parts.aclose()
        raise ProviderError(ErrorKind.RETRYABLE, "the recognition ended without a final transcript")

    async def _delta(self, text: str) -> None:
        text = text.strip()
        if self.options is None:
            return  # transcription events are off: the words are for the model only
        if len(text) <= len(self.sent) or not text.startswith(self.sent):
            return  # nothing new, or a revision of words already sent
        delta, self.sent = text[len(self.sent) :], text
        self.partials += 1
        await self.send(
            server_event(
                "conversation.item.input_audio_transcription.delta",
                item_id=self.item_id,
                content_index=0,
                delta=delta,
            )
        )
