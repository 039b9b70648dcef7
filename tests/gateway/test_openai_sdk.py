"""End to end with the official ``openai`` SDK: SDK → gateway (real uvicorn) → Bailian simulator."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import av
import openai
import pytest

from gateway.audio import decode_to_pcm
from tests.conftest import SimHandle
from tests.sounds import tone_wav


@pytest.fixture
def sdk(gateway_settings: Callable[..., Any], run_gateway: Callable[..., Any]) -> openai.OpenAI:
    server = run_gateway(gateway_settings())
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="sk-gateway-unused", max_retries=0, timeout=60)


def test_chat(sdk: openai.OpenAI) -> None:
    raw = sdk.chat.completions.with_raw_response.create(
        model="qwen-plus",
        messages=[{"role": "user", "content": "Say hello to the customer."}],
        max_tokens=64,
        seed=7,
    )
    assert raw.headers["x-talkgate-provider"] == "bailian:qwen-plus"
    assert raw.headers["x-talkgate-fallback"] == "0"
    completion = raw.parse()
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == "qwen-plus"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content.strip()
    assert completion.choices[0].finish_reason in ("stop", "length")
    assert completion.usage.prompt_tokens > 0 and completion.usage.completion_tokens > 0
    assert (
        completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    )


def test_chat_stream_reports_usage(sdk: openai.OpenAI) -> None:
    stream = sdk.chat.completions.create(
        model="default",
        messages=[{"role": "user", "content": "Tell me about your return policy."}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text.strip()) > 0
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes in (["stop"], ["length"])
    assert chunks[-1].choices == []
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens > 0 and usage.prompt_tokens > 0
    assert all(c.model == "default" for c in chunks)
    assert len({c.id for c in chunks}) == 1


def test_chat_stream_cut_mid_way_raises_in_the_sdk(sdk: openai.OpenAI, sim: SimHandle) -> None:
    """The upstream dies after two chunks: the SDK must see an error, not a short 'complete' answer."""
    sim.fault(service="generation", status=500, cut_after=2, times=1)
    stream = sdk.chat.completions.create(
        model="qwen-plus",
        messages=[{"role": "user", "content": "Explain the warranty terms in detail please."}],
        stream=True,
    )
    received: list[Any] = []
    with pytest.raises(openai.APIError) as info:
        for chunk in stream:
            received.append(chunk)
    assert "interrupted" in str(info.value)
    assert received, "the first chunks were delivered before the failure"
    assert not any(c.choices and c.choices[0].finish_reason for c in received)


def test_unknown_model_is_not_found(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        sdk.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert "gpt-4o" in info.value.message and "qwen-plus" in info.value.message


def test_transcription_of_a_wav(sdk: openai.OpenAI) -> None:
    wav = tone_wav(2.0, 16000)
    raw = sdk.audio.transcriptions.with_raw_response.create(
        model="whisper-1", file=("clip.wav", wav, "audio/wav")
    )
    assert raw.headers["x-talkgate-provider"] == "bailian:paraformer-realtime-v2"
    result = raw.parse()
    assert result.text == "This is a simulated transcript of 2.0 seconds of audio."


def test_transcription_verbose_json(sdk: openai.OpenAI) -> None:
    wav = tone_wav(3.0, 16000)
    result = sdk.audio.transcriptions.create(
        model="whisper-1",
        file=("clip.wav", wav),
        response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
    )
    assert result.duration == pytest.approx(3.0, abs=0.05)
    assert result.segments and result.segments[-1].end <= 3.05
    assert result.words and [w.word for w in result.words][:2] == ["This", "is"]


@pytest.mark.parametrize(("fmt", "container"), [("mp3", "mp3"), ("wav", "wav")])
def test_speech(sdk: openai.OpenAI, fmt: str, container: str) -> None:
    with sdk.audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input="Hello, how can I help you today?", response_format=fmt
    ) as response:
        assert response.headers["x-talkgate-provider"] == "bailian:cosyvoice-v2"
        data = response.read()
    with av.open(io.BytesIO(data)) as c:
        assert c.format.name == container
    audio = decode_to_pcm(data, sample_rate=16000)
    assert audio.duration_s > 0.5
