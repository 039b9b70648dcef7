"""The real engines in their worker processes: a crash mid-call fails only that call, cancellation
reaches llama.cpp, and the next call gets a fresh worker (fault drills: ``TALKGATE_WORKER_FAULT``)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.settings import Settings
from providers.base import (
    AudioData,
    ChatRequest,
    ErrorKind,
    ProviderError,
    SynthesizeRequest,
    TranscribeRequest,
)
from providers.local import ModelPool, build_local_providers
from providers.local.workers.faults import ENV

pytestmark = pytest.mark.slow

TWO_SENTENCES = "Good morning, how can I help you today? Our store opens at nine o'clock."
STORY = [{"role": "user", "content": "Tell me a long story about a cat who sails around the world."}]


@pytest.fixture
def providers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple]:
    """The three providers with a crashing twin of the packaged voice and Whisper model."""
    once = tmp_path / "fired"
    monkeypatch.setenv(
        ENV,
        json.dumps(
            [
                {
                    "model": "piper-crashy",
                    "action": "abort",
                    "method": "synthesize",
                    "after_items": 1,
                    "once_file": str(once / "tts"),
                },
                {"model": "whisper-crashy", "action": "segv", "once_file": str(once / "asr")},
            ]
        ),
    )
    once.mkdir()
    settings = Settings(
        data_dir=tmp_path / "data",
        max_tokens_ceiling=2048,
        local={
            "tts": {"piper-joe": {"voices": ["joe"]}, "piper-crashy": {}},
            "asr": {"whisper-tiny.en": {}, "whisper-crashy": {}},
        },
    )
    pool = ModelPool(2, policy=settings.local.supervision)
    chat, asr, tts = build_local_providers(settings, pool)
    yield chat, asr, tts
    pool.shutdown()


async def test_tts_stream_cut_by_an_abort_after_its_first_sentence(providers: tuple) -> None:
    _, _, tts = providers
    request = SynthesizeRequest(model="piper-crashy", text=TWO_SENTENCES, voice="piper-crashy")
    received = []
    with pytest.raises(ProviderError) as err:
        async for chunk in tts.synthesize_stream(request):
            received.append(chunk)
    assert len(received) == 1 and received[0].pcm  # the first sentence, then the crash
    assert err.value.kind is ErrorKind.UNAVAILABLE and "SIGABRT" in err.value.message
    again = [c async for c in tts.synthesize_stream(request)]  # a fresh worker; the drill fired once
    assert len(again) == 2
    stats = {s.model: s for s in tts.pool.stats()}["piper-crashy"]
    assert stats.crashes == 1 and stats.restarts == 1


async def test_asr_segfault_fails_the_call_and_the_next_one_succeeds(providers: tuple) -> None:
    _, asr, tts = providers
    speech = await tts.synthesize(SynthesizeRequest(model="piper-joe", text=TWO_SENTENCES, voice="joe"))
    request = TranscribeRequest(
        model="whisper-crashy", audio=AudioData(speech.audio.pcm, speech.audio.sample_rate)
    )
    with pytest.raises(ProviderError) as err:
        await asr.transcribe(request)
    assert err.value.code == "WorkerCrashed" and "SIGSEGV" in err.value.message
    transcript = await asr.transcribe(request)
    assert "morning" in transcript.text.lower()
    healthy = await asr.health()
    assert healthy.ok and "crashed 1 times" in healthy.detail


async def test_closing_a_chat_stream_stops_llama_cpp_in_the_worker(providers: tuple) -> None:
    chat, _, _ = providers
    request = ChatRequest(model="smollm2", messages=STORY, temperature=0, max_tokens=1500)
    stream = chat.chat_stream(request)
    async for chunk in stream:
        if chunk.delta:
            break
    await stream.aclose()
    # The model's single slot is free again once the worker has really stopped generating:
    # within a few tokens, not after the ~1500 asked for (tens of seconds on this CPU).
    release = await asyncio.wait_for(chat.pool.acquire((chat.limit("smollm2"),)), 3)
    release()
    assert (
        await chat.chat(ChatRequest(model="smollm2", messages=STORY, max_tokens=4))
    ).usage.completion_tokens == 4
