"""Wire-format pieces that need no server: SSE splitting, request bodies, text splitting, WAV wrapping."""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np
import pytest

from providers.base import ChatRequest, ErrorKind, ProviderError, SynthesizeRequest
from providers.cloud.asr import join_sentences
from providers.cloud.chat import build_body, finish_reason
from providers.cloud.client import DashScopeClient, iter_sse, parse_sse_block
from providers.cloud.tts import _COSYVOICE_VOICE, BailianTTSProvider, _WordTimeline, split_text
from providers.cloud.wav import pcm_to_wav, wav_to_pcm
from tests.sounds import wav_of


class _Settings:
    dashscope_api_key = "sk-x"
    dashscope_http_base_url = "http://127.0.0.1:1/api/v1/"
    dashscope_websocket_base_url = "ws://127.0.0.1:1/api-ws/v1/inference/"
    upstream_timeout_s = 1.0
    max_tokens_ceiling = 100


def test_sse_block_with_status_comment_and_error_event() -> None:
    block = b'id:2\nevent:error\n:HTTP_STATUS/400\ndata:{"code":"DataInspectionFailed","message":"m"}'
    event = parse_sse_block(block)
    assert event is not None
    assert event.event == "error"
    assert event.status == 400
    assert event.data["code"] == "DataInspectionFailed"
    assert parse_sse_block(b":keepalive comment") is None


async def _collect(chunks: list[bytes]) -> list:
    async def feed() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    return [e async for e in iter_sse(feed())]


async def test_sse_events_split_across_arbitrary_chunks_and_crlf() -> None:
    stream = (
        b'id:1\nevent:result\n:HTTP_STATUS/200\ndata:{"n":1}\n\n'
        b'id:2\r\nevent:result\r\ndata: {"n":2}\r\n\r\n'
        b'id:3\ndata:{"n":3}'  # last event without the trailing blank line
    )
    pieces = [stream[i : i + 7] for i in range(0, len(stream), 7)]
    events = await _collect(pieces)
    assert [e.data["n"] for e in events] == [1, 2, 3]
    assert events[0].status == 200


def test_body_clamps_and_defaults_max_tokens_to_the_ceiling() -> None:
    base = {"model": "qwen-plus", "messages": [{"role": "user", "content": "hi"}]}
    assert (
        build_body(ChatRequest(**base, max_tokens=5000), 100, stream=False)["parameters"]["max_tokens"] == 100
    )
    assert build_body(ChatRequest(**base), 100, stream=False)["parameters"]["max_tokens"] == 100
    body = build_body(
        ChatRequest(
            **base,
            max_tokens=7,
            temperature=0.2,
            top_p=0.9,
            seed=3,
            stop=["x"],
            extra={"top_k": 5, "user": "u"},
        ),
        100,
        stream=True,
    )
    assert body["parameters"] == {
        "result_format": "message",
        "max_tokens": 7,
        "incremental_output": True,
        "temperature": 0.2,
        "top_p": 0.9,
        "seed": 3,
        "stop": ["x"],
        "top_k": 5,
    }
    assert body["input"] == {"messages": base["messages"]}
    assert "stream" not in body


def test_finish_reason_null_string() -> None:
    assert finish_reason("null") is None
    assert finish_reason(None) is None
    assert finish_reason("length") == "length"


def test_split_text_respects_limit_and_prefers_breaks() -> None:
    text = "One sentence here. " * 50
    pieces = split_text(text, limit=100)
    assert "".join(pieces) == text
    assert all(len(p) <= 100 for p in pieces)
    assert all(p.endswith((". ", " ")) for p in pieces[:-1])
    hard = split_text("x" * 250, limit=100)
    assert [len(p) for p in hard] == [100, 100, 50]


def test_word_timeline_keeps_latest_list_and_hands_out_each_word_once() -> None:
    t = _WordTimeline()
    w = [{"text": "a", "begin_time": 0, "end_time": 100}, {"text": "b", "begin_time": 100, "end_time": 250}]
    t.update({"sentence": {"index": 0, "words": w[:1]}})
    assert [x.text for x in t.take_new()] == ["a"]
    t.update({"sentence": {"index": 0, "words": w}})
    fresh = t.take_new()
    assert [(x.text, x.start, x.end) for x in fresh] == [("b", 0.1, 0.25)]
    assert t.take_new() == []
    assert [x.text for x in t.all()] == ["a", "b"]


def test_qwen_voice_mapping() -> None:
    assert _COSYVOICE_VOICE.search("longxiaochun_v2")
    assert not _COSYVOICE_VOICE.search("Cherry")
    provider = BailianTTSProvider(_Settings())
    body = provider._qwen_body(
        SynthesizeRequest(model="qwen-tts", text="hi", voice="longxiaochun_v2", language="en")
    )
    assert body["input"] == {"text": "hi", "voice": "Cherry", "language_type": "English"}


def test_wav_round_trip_and_unusable_audio_is_retryable() -> None:
    pcm = (np.arange(1000, dtype="<i2") * 7).tobytes()
    assert wav_to_pcm(pcm_to_wav(pcm, 16000)) == (pcm, 16000)
    stereo = wav_of(np.array([[100, 300], [-50, -150]], dtype="<i2").tobytes(), 8000, channels=2)
    assert wav_to_pcm(stereo) == (np.array([200, -100], dtype="<i2").tobytes(), 8000)
    for junk in (b"<html>rate limited</html>", wav_of(b"\x80" * 10, 8000, width=1)):
        with pytest.raises(ProviderError) as info:
            wav_to_pcm(junk)
        assert info.value.kind is ErrorKind.RETRYABLE and "DashScope returned unusable audio" in str(
            info.value
        )


def test_join_sentences() -> None:
    assert join_sentences(["Hello there.", "How are you?"]) == "Hello there. How are you?"
    assert join_sentences(["你好。", "再见。"]) == "你好。再见。"


def test_base_urls_with_or_without_trailing_slash() -> None:
    client = DashScopeClient(_Settings())
    assert client.url("services/x") == "http://127.0.0.1:1/api/v1/services/x"
    assert client.ws_url == "ws://127.0.0.1:1/api-ws/v1/inference"


async def test_health_never_touches_the_network() -> None:
    provider = BailianTTSProvider(_Settings())  # port 1: nothing listens there
    assert not (await provider.health()).ok
    await provider.load()
    try:
        health = await provider.health()
        assert health.ok and "loaded" in health.detail
    finally:
        await provider.unload()
    assert not provider.client.is_open


@pytest.mark.parametrize("key", [None, ""])
async def test_health_reports_missing_key(key: str | None) -> None:
    settings = _Settings()
    settings.dashscope_api_key = key  # type: ignore[assignment]
    health = await BailianTTSProvider(settings).health()
    assert not health.ok and "DASHSCOPE_API_KEY" in health.detail


async def test_register_cloud_providers_shares_one_client_and_hooks_lifecycle() -> None:
    from gateway.services import Services
    from gateway.settings import Settings
    from policies.routing import ProviderRegistry, Router
    from providers.base import ChatProvider, SynthesizeProvider, TranscribeProvider
    from providers.cloud import register_cloud_providers

    settings = Settings(dashscope_api_key="sk-x", dashscope_http_base_url="http://127.0.0.1:1/api/v1")
    registry = ProviderRegistry()
    services = Services(settings=settings, registry=registry, router=Router(settings, registry))
    register_cloud_providers(services)
    chat, asr, tts = (registry.get(cap, "bailian") for cap in ("chat", "asr", "tts"))
    assert isinstance(chat, ChatProvider)
    assert isinstance(asr, TranscribeProvider)
    assert isinstance(tts, SynthesizeProvider)
    assert chat.client is asr.client is tts.client
    assert "qwen-plus" in chat.models() and "paraformer-realtime-v2" in asr.models()
    assert "cosyvoice-v2" in tts.models() and "qwen-tts" in tts.models()
    await services.start()
    try:
        assert chat.client.is_open
        for provider in (chat, asr, tts):
            assert (await provider.health()).ok
    finally:
        await services.stop()
    assert not chat.client.is_open
