"""Streaming ASR through the router (policies/asr_stream.py) with scripted in-process recognisers:
partials from the first streaming target, and the whole-utterance fallback whenever it fails."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.context import RequestContext
from gateway.settings import RouteConfig, Settings
from policies.routing import ProviderRegistry, Router
from providers.base import (
    AudioData,
    ErrorKind,
    Health,
    ProviderError,
    TranscribeRequest,
    Transcript,
    TranscriptPart,
)

RATE = 16000


class Whole:
    """A recogniser of whole utterances (local Whisper's shape): the text names the bytes heard."""

    name = "local"

    def __init__(self) -> None:
        self.heard: list[bytes] = []

    async def load(self) -> None: ...
    async def unload(self) -> None: ...
    async def health(self) -> Health:
        return Health(ok=True)

    def models(self) -> list[str]:
        return ["whisper"]

    async def transcribe(self, request: TranscribeRequest) -> Transcript:
        self.heard.append(request.audio.pcm)
        return Transcript(text=f"whole {len(request.audio.pcm)} bytes")


class Streaming(Whole):
    """Streams: a partial per chunk ("w1 w2 ..."), the final after the audio ends. ``fail_after``
    chunks raise ``error``; ``hang`` never answers after the audio ends."""

    name = "bailian"

    def __init__(self, fail_after: int | None = None, error: ProviderError | None = None, hang: bool = False):
        super().__init__()
        self.fail_after, self.error, self.hang = fail_after, error, hang
        self.streamed: list[bytes] = []
        self.closed = asyncio.Event()

    def streams_transcription(self, model: str) -> bool:
        return model == "paraformer-realtime-v2"

    async def transcribe_stream(
        self, request: TranscribeRequest, audio: AsyncIterator[bytes]
    ) -> AsyncIterator[TranscriptPart]:
        assert request.model == "paraformer-realtime-v2" and request.audio.sample_rate == RATE
        words: list[str] = []
        try:
            async for chunk in audio:
                self.streamed.append(chunk)
                if self.fail_after is not None and len(self.streamed) > self.fail_after:
                    raise self.error or ProviderError(ErrorKind.RETRYABLE, "socket cut")
                words.append(f"w{len(words) + 1}")
                yield TranscriptPart(" ".join(words))
            if self.hang:
                await asyncio.sleep(3600)
            text = " ".join(words)
            yield TranscriptPart(text, final=True, transcript=Transcript(text=text))
        finally:
            self.closed.set()


def make_router(streaming: Streaming, **settings: Any) -> tuple[Router, Whole, list[tuple[str, dict]]]:
    base: dict[str, Any] = {
        "dashscope_api_key": "sk-x",
        "upstream_timeout_s": 0.3,
        "retry": {"attempts": 2, "base_delay_s": 0.001, "max_delay_s": 0.002},
        "breaker": {"consecutive_failures": 1, "min_calls": 100, "cooldown_s": 30},
        "routes": {
            "chat": RouteConfig(chain=["local:smollm2"]),
            "asr": RouteConfig(chain=["bailian:paraformer-realtime-v2", "local:whisper"]),
            "tts": RouteConfig(chain=["local:piper-joe"]),
        },
    }
    base.update(settings)
    registry = ProviderRegistry()
    whole = Whole()
    registry.register("asr", streaming)
    registry.register("asr", whole)
    router = Router(Settings(**base), registry)
    events: list[tuple[str, dict]] = []
    router.listeners.append(lambda e, f: events.append((e, f)))
    return router, whole, events


async def chunks(n: int, gap_s: float = 0.0) -> AsyncIterator[bytes]:
    for i in range(n):
        await asyncio.sleep(gap_s)
        yield bytes([i + 1]) * 640  # 20 ms at 16 kHz


def request() -> TranscribeRequest:
    return TranscribeRequest(model="", audio=AudioData(b"", RATE))


async def parts_of(router: Router, audio: AsyncIterator[bytes], ctx: RequestContext) -> list[TranscriptPart]:
    return [p async for p in router.transcribe_stream(request(), audio, ctx)]


async def test_partials_then_the_final_from_the_streaming_target() -> None:
    streaming = Streaming()
    router, whole, events = make_router(streaming)
    ctx = RequestContext(request_id="t")
    parts = await parts_of(router, chunks(3), ctx)
    assert [p.text for p in parts] == ["w1", "w1 w2", "w1 w2 w3", "w1 w2 w3"]
    assert [p.final for p in parts] == [False, False, False, True]
    assert parts[-1].transcript is not None and parts[-1].transcript.text == "w1 w2 w3"
    assert (ctx.provider, ctx.fallback) == ("bailian:paraformer-realtime-v2", False)
    assert whole.heard == [] and len(streaming.streamed) == 3
    attempts = [f for e, f in events if e == "attempt"]
    assert [(a["target"], a["outcome"], a["capability"]) for a in attempts] == [
        ("bailian:paraformer-realtime-v2", "ok", "asr")
    ]


async def test_a_stream_cut_midway_falls_back_to_the_whole_utterance() -> None:
    streaming = Streaming(fail_after=2)
    router, whole, events = make_router(streaming)
    ctx = RequestContext(request_id="t")
    parts = await parts_of(router, chunks(5), ctx)
    assert [p.text for p in parts[:2]] == ["w1", "w1 w2"]  # the partials heard before the cut
    final = parts[-1]
    assert final.final and final.text == "whole 3200 bytes"  # every chunk, those after the cut too
    assert whole.heard == [b"".join(bytes([i + 1]) * 640 for i in range(5))]
    assert (ctx.provider, ctx.fallback) == ("local:whisper", True)
    assert streaming.closed.is_set()
    # The whole-utterance walk skipped the target whose stream had just failed.
    outcomes = [(f["target"], f["outcome"]) for e, f in events if e == "attempt"]
    assert outcomes == [("bailian:paraformer-realtime-v2", "error"), ("local:whisper", "ok")]
    assert any(e == "fallback" and f["to_target"] == "local:whisper" for e, f in events)
    # Its breaker counted the failure (one consecutive failure opens it in this router): the next
    # utterance goes straight to the whole path, without a stream.
    streaming2_parts = await parts_of(router, chunks(2), RequestContext(request_id="u"))
    assert [p.final for p in streaming2_parts] == [True] and len(streaming.streamed) == 3


async def test_no_final_after_the_audio_ends_is_a_timeout_then_the_whole_path() -> None:
    streaming = Streaming(hang=True)
    router, whole, events = make_router(streaming)
    ctx = RequestContext(request_id="t")
    loop = asyncio.get_running_loop()
    started = loop.time()
    parts = await parts_of(router, chunks(2), ctx)
    assert parts[-1].text == "whole 1280 bytes" and ctx.fallback and len(whole.heard) == 1
    assert loop.time() - started < 2.0  # upstream_timeout_s (0.3 s) after the audio's end, not an hour
    error = next(f for e, f in events if e == "attempt" and f["outcome"] == "error")
    assert error["error_kind"] == "timeout"
    await asyncio.wait_for(streaming.closed.wait(), 1.0)


@pytest.mark.parametrize("kind", [ErrorKind.CONTENT_FILTERED, ErrorKind.BAD_REQUEST])
async def test_what_never_falls_back_is_raised(kind: ErrorKind) -> None:
    streaming = Streaming(fail_after=1, error=ProviderError(kind, "refused", code="DataInspectionFailed"))
    router, whole, _ = make_router(streaming)
    with pytest.raises(ProviderError) as info:
        await parts_of(router, chunks(3), RequestContext(request_id="t"))
    assert info.value.kind is kind and whole.heard == []


async def test_without_a_streaming_target_the_utterance_is_transcribed_whole() -> None:
    streaming = Streaming()
    router, whole, _ = make_router(
        streaming,
        routes={
            "chat": RouteConfig(chain=["local:smollm2"]),
            "asr": RouteConfig(chain=["local:whisper"]),
            "tts": RouteConfig(chain=["local:piper-joe"]),
        },
    )
    ctx = RequestContext(request_id="t")
    parts = await parts_of(router, chunks(4), ctx)
    assert [(p.text, p.final) for p in parts] == [("whole 2560 bytes", True)]
    assert (ctx.provider, ctx.fallback) == ("local:whisper", False) and streaming.streamed == []
    assert len(whole.heard) == 1


async def test_closing_early_closes_the_upstream_stream() -> None:
    streaming = Streaming()
    router, whole, events = make_router(streaming)
    feed: asyncio.Queue[bytes | None] = asyncio.Queue()

    async def audio() -> AsyncIterator[bytes]:
        while (chunk := await feed.get()) is not None:
            yield chunk

    stream = router.transcribe_stream(request(), audio(), RequestContext(request_id="t"))
    feed.put_nowait(b"\x01\x00" * 320)
    first = await anext(stream)
    assert first.text == "w1"
    await stream.aclose()  # the caller abandons the utterance (input_audio_buffer.clear)
    await asyncio.wait_for(streaming.closed.wait(), 1.0)
    assert whole.heard == []  # nothing transcribed, nothing booked as a failure
    assert not any(e == "attempt" for e, _ in events)
