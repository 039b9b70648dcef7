"""llama.cpp chat with the real SmolLM2-135M GGUF from PyPI."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from gateway.settings import Settings
from providers.base import ChatRequest, ErrorKind, ProviderError
from providers.local import LlamaCppChatProvider, ModelPool

pytestmark = pytest.mark.slow

STORY = [{"role": "user", "content": "Tell me a long story about a cat who sails around the world."}]
QUESTION = [{"role": "user", "content": "What is 2+2? answer briefly"}]  # ends by itself


@pytest.fixture(scope="module")
def chat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaCppChatProvider]:
    """SmolLM2 twice: the default (n_ctx 2048) and a tiny-context copy for the clamp tests."""
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("data"),
        max_tokens_ceiling=64,
        local={"llm": {"smollm2": {}, "smollm2-small-ctx": {"n_ctx": 256}}},
    )
    pool = ModelPool(2)
    yield LlamaCppChatProvider(settings, pool)
    pool.shutdown()


async def test_plain_chat_has_text_and_usage(chat: LlamaCppChatProvider) -> None:
    result = await chat.chat(ChatRequest(model="smollm2", messages=QUESTION, temperature=0))
    assert result.text.strip()
    assert result.finish_reason == "stop"  # greedy decoding of this prompt ends before the ceiling
    assert result.usage.prompt_tokens > 10 and result.usage.completion_tokens > 0
    assert result.model == "smollm2"
    assert chat.is_loaded("smollm2")


async def test_stream_matches_plain_at_temperature_zero(chat: LlamaCppChatProvider) -> None:
    request = ChatRequest(model="smollm2", messages=QUESTION, temperature=0, max_tokens=40)
    plain = await chat.chat(request)
    chunks = [c async for c in chat.chat_stream(request)]
    assert len([c for c in chunks if c.delta]) >= 2
    assert "".join(c.delta for c in chunks) == plain.text
    last = chunks[-1]
    assert last.finish_reason == plain.finish_reason
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (
        plain.usage.prompt_tokens,
        plain.usage.completion_tokens,
    )


async def test_max_tokens_is_respected(chat: LlamaCppChatProvider) -> None:
    result = await chat.chat(ChatRequest(model="smollm2", messages=STORY, max_tokens=5))
    assert result.finish_reason == "length"
    assert result.usage.completion_tokens == 5
    chunks = [c async for c in chat.chat_stream(ChatRequest(model="smollm2", messages=STORY, max_tokens=5))]
    assert chunks[-1].finish_reason == "length"


async def test_ceiling_applies_when_max_tokens_is_missing_or_larger(chat: LlamaCppChatProvider) -> None:
    for max_tokens in (None, 10_000):
        result = await chat.chat(
            ChatRequest(model="smollm2", messages=STORY, max_tokens=max_tokens, temperature=0)
        )
        assert result.usage.completion_tokens <= 64
        assert result.finish_reason == "length"  # a long story does not end within 64 tokens


async def test_max_tokens_is_clamped_to_what_fits_the_context(chat: LlamaCppChatProvider) -> None:
    # about 220 prompt tokens leave ~36 of the 256-token context for the answer
    long_story = [{"role": "user", "content": "Once upon a time " * 45 + STORY[0]["content"]}]
    result = await chat.chat(
        ChatRequest(model="smollm2-small-ctx", messages=long_story, max_tokens=60, temperature=0)
    )
    assert 200 < result.usage.prompt_tokens < 250
    assert result.usage.prompt_tokens + result.usage.completion_tokens <= 256
    assert result.finish_reason == "length"


async def test_prompt_longer_than_the_context_is_a_bad_request(chat: LlamaCppChatProvider) -> None:
    long = [{"role": "user", "content": "word " * 300}]
    with pytest.raises(ProviderError) as err:
        await chat.chat(ChatRequest(model="smollm2-small-ctx", messages=long))
    assert err.value.kind is ErrorKind.BAD_REQUEST and "256" in err.value.message


async def test_stop_sequence_cuts_the_answer(chat: LlamaCppChatProvider) -> None:
    request = ChatRequest(model="smollm2", messages=STORY, temperature=0, max_tokens=30)
    full = (await chat.chat(request)).text
    words = full.split()
    assert len(words) > 6
    stop = words[5]
    request.stop = [stop]
    cut = await chat.chat(request)
    assert stop not in cut.text
    assert cut.finish_reason == "stop"
    assert full.startswith(cut.text)


async def test_seed_makes_sampling_repeatable(chat: LlamaCppChatProvider) -> None:
    def request(seed: int) -> ChatRequest:
        return ChatRequest(
            model="smollm2", messages=STORY, temperature=1.0, top_p=1.0, seed=seed, max_tokens=24
        )

    a, b = await chat.chat(request(7)), await chat.chat(request(7))
    assert a.text == b.text
    others = {(await chat.chat(request(seed))).text for seed in (8, 9, 10)}
    assert others - {a.text}  # a different seed gives a different sample


async def test_text_parts_are_accepted_and_images_refused(chat: LlamaCppChatProvider) -> None:
    parts = [{"role": "user", "content": [{"type": "text", "text": "What is the capital of France?"}]}]
    result = await chat.chat(ChatRequest(model="smollm2", messages=parts, temperature=0, max_tokens=20))
    assert result.text
    image = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}]
    with pytest.raises(ProviderError) as err:
        await chat.chat(ChatRequest(model="smollm2", messages=image))
    assert err.value.kind is ErrorKind.BAD_REQUEST


async def test_router_falls_back_to_local_without_a_cloud_key(tmp_path: Path) -> None:
    from gateway.services import build_services

    services = build_services(Settings(data_dir=tmp_path / "data", dashscope_api_key=None))
    await services.start()
    try:
        ctx = SimpleNamespace(upstream_s=0.0, provider=None, fallback=False)
        result = await services.router.chat(
            ChatRequest(model="", messages=QUESTION, temperature=0, max_tokens=20), ctx
        )
        assert result.text and ctx.provider == "local:smollm2" and ctx.fallback
    finally:
        await services.stop()


async def test_amx_cpus_load_without_extra_buffer_types(chat: LlamaCppChatProvider) -> None:
    """On an AMX CPU the AMX repack crashes llama.cpp (issue 20824): ``auto`` must keep it off."""
    import llama_cpp.llama_cpp as llama_lib

    from providers.local.llama_cpu import amx_present

    info = await chat.model("smollm2")  # what the worker's llama.cpp was loaded with
    assert info["extra_buffers"] is (not amx_present(llama_lib))
    answer = await chat.chat(ChatRequest(model="smollm2", messages=QUESTION, temperature=0, max_tokens=8))
    assert answer.usage.completion_tokens > 0
