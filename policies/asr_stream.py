"""Streaming recognition through the ASR chain: partials while the audio arrives, a final always.

The chain's first target that can stream (``streams_transcription``) and whose circuit breaker
allows a call gets the audio as it arrives; its parts are passed on. A stream cannot fail over
to another target half way (the audio already sent would have to be replayed, late), so when it
fails, before its first partial or in the middle, the audio is kept on being collected and, once
it ends, transcribed whole by the ordinary chain walk (``Router.transcribe``) without the target
that failed: the caller still gets a final transcript, only later. The same happens when no
target can stream (offline: local Whisper answers whole utterances).

Each stream is one attempt in the router's terms: it is counted by the target's breaker and
reported to the router's listeners (metrics) like any call. Its ``seconds`` are the time from
the end of the audio to the final transcript: the part of the latency a streaming recogniser
still adds, and what a slow one shows up in. A stream that has not produced its final within
``final_timeout_s`` of the audio's end is given up as a timeout.

The caller's ``ctx`` gets ``provider`` (who gave the final) and ``fallback`` as for any call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

from policies.streamguard import close_quietly, describe_error
from providers.base import (
    FAILOVER_KINDS,
    AudioData,
    ErrorKind,
    ProviderError,
    TranscribeRequest,
    TranscriptPart,
    streams_transcription,
)

log = logging.getLogger("talkgate.routing")

_END = object()


class _Feed:
    """The caller's audio, read once: kept whole (for a fallback) and queued for the stream."""

    def __init__(self, on_end: Callable[[], None]) -> None:
        self.heard = bytearray()
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.ended = asyncio.Event()
        self.on_end = on_end

    async def pump(self, source: AsyncIterator[bytes]) -> None:
        try:
            async for chunk in source:
                self.heard += chunk
                self.queue.put_nowait(chunk)
        finally:
            self.queue.put_nowait(None)
            self.ended.set()
            self.on_end()

    async def chunks(self) -> AsyncIterator[bytes]:
        """What the streaming provider reads."""
        while (chunk := await self.queue.get()) is not None:
            yield chunk


async def transcribe_stream(
    router: Any,
    request: TranscribeRequest,
    audio: AsyncIterator[bytes],
    ctx: Any,
    *,
    final_timeout_s: float,
) -> AsyncIterator[TranscriptPart]:
    """Parts of the transcript of ``audio`` (PCM16 at ``request.audio.sample_rate``); the last
    one is final. Raises ProviderError only when the whole-utterance fallback fails too, or at
    once for what never falls back (a content-filter or bad-request answer)."""
    loop = asyncio.get_running_loop()
    out: asyncio.Queue[Any] = asyncio.Queue()
    state: dict[str, Any] = {"upstream": None, "timer": None, "timed_out": False, "ended_at": None}

    def audio_ended() -> None:
        state["ended_at"] = time.perf_counter()
        upstream = state["upstream"]
        if upstream is not None and not upstream.done():
            state["timer"] = loop.call_later(final_timeout_s, give_up)

    def give_up() -> None:
        state["timed_out"] = True
        state["upstream"].cancel()

    feed = _Feed(audio_ended)
    pump = asyncio.create_task(feed.pump(audio))
    failed: set[str] = set()
    try:
        picked = await _pick(router, request)
        if picked is not None:
            index, target, provider, breaker, permit = picked
            started = time.perf_counter()

            async def consume() -> None:
                parts = provider.transcribe_stream(replace(request, model=target.model), feed.chunks())
                try:
                    async for part in parts:
                        out.put_nowait(part)
                    out.put_nowait(_END)
                except asyncio.CancelledError:
                    if not state["timed_out"]:
                        raise
                    out.put_nowait(
                        ProviderError(
                            ErrorKind.TIMEOUT,
                            f"no final transcript within {final_timeout_s:g}s of the audio's end",
                        )
                    )
                except ProviderError as exc:
                    out.put_nowait(exc)
                except Exception as exc:  # a provider bug must not escape as a 500
                    log.exception("streaming ASR %s raised an unclassified error", target)
                    out.put_nowait(
                        ProviderError(
                            ErrorKind.UNAVAILABLE, f"internal error in {target}: {type(exc).__name__}"
                        )
                    )
                finally:
                    await close_quietly(parts)

            state["upstream"] = upstream = asyncio.create_task(consume())
            if feed.ended.is_set():
                audio_ended()
            try:
                while True:
                    item = await out.get()
                    if item is _END:
                        raise ProviderError(
                            ErrorKind.RETRYABLE, "the stream ended without a final transcript"
                        )
                    if isinstance(item, ProviderError):
                        raise item
                    if item.final:
                        await breaker.record(permit, True)
                        _attempted(router, ctx, target, "ok", _since(state, started), None)
                        ctx.provider, ctx.fallback = str(target), index > 0
                        yield item
                        return
                    yield item
            except ProviderError as exc:
                exc.provider = exc.provider or str(target)
                await breaker.record_error(permit, exc)
                _attempted(router, ctx, target, "error", _since(state, started), exc)
                if exc.kind not in FAILOVER_KINDS:
                    raise  # content filter, bad request: never bypassed by another recogniser
                log.warning(
                    "streaming ASR %s failed (%s); the utterance is transcribed whole",
                    target,
                    describe_error(exc),
                )
                failed.add(str(target))
            finally:
                if state["timer"] is not None:
                    state["timer"].cancel()
                upstream.cancel()
                await asyncio.wait([upstream])
        await pump  # the rest of the audio
        whole = replace(request, audio=AudioData(bytes(feed.heard), request.audio.sample_rate))
        result = await router.transcribe(
            whole, ctx, skip=lambda t: "its stream just failed" if str(t) in failed else None
        )
        if failed:
            ctx.fallback = True
        yield TranscriptPart(result.text, final=True, transcript=result)
    finally:
        pump.cancel()
        await asyncio.wait([pump])


def can_stream(router: Any, model: str = "") -> bool:
    """Whether the ASR chain has a target that can stream at all (its provider registered): false
    offline, where every utterance is transcribed whole once it ends."""
    for target in router.resolve("asr", model or None):
        provider = router.registry.get("asr", target.provider)
        if provider is not None and streams_transcription(provider, target.model):
            return True
    return False


async def _pick(router: Any, request: TranscribeRequest) -> tuple[int, Any, Any, Any, Any] | None:
    """The first target that streams and whose breaker lets a call through, with its permit."""
    lease_s = float(router.settings.deadlines.asr)
    for index, target in enumerate(router.resolve("asr", request.model)):
        provider = router.registry.get("asr", target.provider)
        if provider is None or not streams_transcription(provider, target.model):
            continue
        breaker = router.breakers.get(target)
        permit = await breaker.acquire(lease_s=lease_s)
        if permit.allowed:
            return index, target, provider, breaker, permit
        router.emit("skip", target=str(target), capability="asr", reason="circuit open")
    return None


def _since(state: dict[str, Any], started: float) -> float:
    """Seconds from the end of the audio (or from the start, if it has not ended) until now."""
    return time.perf_counter() - (state["ended_at"] or started)


def _attempted(
    router: Any, ctx: Any, target: Any, outcome: str, seconds: float, exc: ProviderError | None
) -> None:
    ctx.upstream_s += seconds
    router.attempted(target, "asr", outcome, seconds, exc.kind if exc else None, 1, exc.code if exc else None)
