"""BailianChatProvider against the Bailian simulator: plain, streaming, ceilings, and every error class."""

from __future__ import annotations

from typing import Any

import pytest

from providers.base import ChatRequest, ErrorKind, ProviderError
from tests.conftest import SimHandle
from tests.servers import free_port


def _request(**kw: Any) -> ChatRequest:
    kw.setdefault("model", "qwen-plus")
    kw.setdefault("messages", [{"role": "user", "content": "Tell me about the weather today."}])
    return ChatRequest(**kw)


def _last_body(sim: SimHandle) -> dict[str, Any]:
    items = sim.requests("generation")
    assert items, "the simulator recorded no generation call"
    return items[-1]["body"]


async def test_plain_chat_text_usage_and_body(cloud: Any, sim: SimHandle) -> None:
    result = await cloud.chat.chat(_request(temperature=0.3, top_p=0.8, seed=7, stop=["zzz"]))
    assert result.text.strip()
    assert result.finish_reason == "stop"
    assert result.usage.prompt_tokens > 0
    assert result.usage.completion_tokens > 0
    assert result.model == "qwen-plus"
    params = _last_body(sim)["parameters"]
    assert params["result_format"] == "message"
    assert params["temperature"] == 0.3 and params["top_p"] == 0.8 and params["seed"] == 7
    assert params["stop"] == ["zzz"]
    assert "incremental_output" not in params


async def test_missing_max_tokens_becomes_the_ceiling(make_cloud: Any, sim: SimHandle) -> None:
    cloud = await make_cloud(max_tokens_ceiling=64)
    await cloud.chat.chat(_request())
    assert _last_body(sim)["parameters"]["max_tokens"] == 64


async def test_max_tokens_above_the_ceiling_is_clamped(make_cloud: Any, sim: SimHandle) -> None:
    cloud = await make_cloud(max_tokens_ceiling=3)
    result = await cloud.chat.chat(_request(max_tokens=100_000))
    assert _last_body(sim)["parameters"]["max_tokens"] == 3
    assert result.finish_reason == "length"
    assert result.usage.completion_tokens == 3


async def test_stream_matches_plain_and_ends_with_reason_and_usage(cloud: Any, sim: SimHandle) -> None:
    plain = await cloud.chat.chat(_request())
    chunks = [c async for c in cloud.chat.chat_stream(_request())]
    assert len(chunks) > 2
    assert "".join(c.delta for c in chunks) == plain.text
    assert all(c.finish_reason is None for c in chunks[:-1])
    assert chunks[-1].finish_reason == "stop"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    record = sim.requests("generation")[-1]
    assert record["stream"] is True
    assert record["body"]["parameters"]["incremental_output"] is True


async def test_stream_length_finish(cloud: Any) -> None:
    chunks = [c async for c in cloud.chat.chat_stream(_request(max_tokens=2))]
    assert chunks[-1].finish_reason == "length"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 2


async def test_mid_stream_error_event_raises_from_the_iterator(cloud: Any, sim: SimHandle) -> None:
    sim.fault(service="generation", status=400, code="DataInspectionFailed", cut_after=2)
    received = []
    with pytest.raises(ProviderError) as info:
        async for chunk in cloud.chat.chat_stream(_request()):
            received.append(chunk)
    assert len(received) == 2
    assert info.value.kind is ErrorKind.CONTENT_FILTERED
    assert info.value.code == "DataInspectionFailed"


async def test_dropped_stream_is_retryable_not_a_short_answer(cloud: Any, sim: SimHandle) -> None:
    sim.fault(service="generation", cut_after=2)
    with pytest.raises(ProviderError) as info:
        async for _ in cloud.chat.chat_stream(_request()):
            pass
    assert info.value.kind is ErrorKind.RETRYABLE


async def test_dropped_plain_response_is_retryable(cloud: Any, sim: SimHandle) -> None:
    sim.fault(service="generation", cut_after=0)
    with pytest.raises(ProviderError) as info:
        await cloud.chat.chat(_request())
    assert info.value.kind is ErrorKind.RETRYABLE


async def _call(cloud: Any, stream: bool) -> None:
    """One chat call, streamed to its end or not: how each path surfaces an error."""
    if stream:
        async for _ in cloud.chat.chat_stream(_request()):
            pass
    else:
        await cloud.chat.chat(_request())


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("fault", "kind", "code"),
    [
        ({"status": 500}, ErrorKind.RETRYABLE, "InternalError"),
        ({"status": 503}, ErrorKind.UNAVAILABLE, "ModelUnavailable"),
        ({"status": 400, "code": "DataInspectionFailed"}, ErrorKind.CONTENT_FILTERED, "DataInspectionFailed"),
        (
            {"status": 429, "code": "Throttling.AllocationQuota"},
            ErrorKind.UNAVAILABLE,
            "Throttling.AllocationQuota",
        ),
        ({"status": 400, "code": "Arrearage"}, ErrorKind.AUTH, "Arrearage"),
    ],
)
async def test_http_error_classes(
    cloud: Any, sim: SimHandle, stream: bool, fault: dict[str, Any], kind: ErrorKind, code: str
) -> None:
    sim.fault(service="generation", times=1, **fault)
    with pytest.raises(ProviderError) as info:
        await _call(cloud, stream)
    assert info.value.kind is kind
    assert info.value.code == code
    assert info.value.status == fault["status"]
    # The fault was used up: the same provider works again (no broken pooled connection).
    assert (await cloud.chat.chat(_request())).text


async def test_rate_limit_carries_retry_after(cloud: Any, sim: SimHandle) -> None:
    sim.fault(service="generation", status=429, retry_after=2)
    with pytest.raises(ProviderError) as info:
        await cloud.chat.chat(_request())
    assert info.value.kind is ErrorKind.RATE_LIMITED
    assert info.value.retryable
    assert info.value.retry_after == 2.0


async def test_wrong_key_is_auth(make_cloud: Any) -> None:
    cloud = await make_cloud(dashscope_api_key="sk-wrong")
    with pytest.raises(ProviderError) as info:
        await cloud.chat.chat(_request())
    assert info.value.kind is ErrorKind.AUTH
    assert info.value.code == "InvalidApiKey"
    assert info.value.status == 401


async def test_unknown_model_fails_over_rather_than_blaming_the_client(cloud: Any) -> None:
    with pytest.raises(ProviderError) as info:
        await cloud.chat.chat(_request(model="no-such-model"))
    assert info.value.kind is ErrorKind.UNAVAILABLE
    assert info.value.code == "ModelNotFound"


async def test_connection_refused_is_unavailable(make_cloud: Any) -> None:
    port = free_port()  # nothing listens there
    cloud = await make_cloud(dashscope_http_base_url=f"http://127.0.0.1:{port}/api/v1")
    with pytest.raises(ProviderError) as info:
        await cloud.chat.chat(_request())
    assert info.value.kind is ErrorKind.UNAVAILABLE
    with pytest.raises(ProviderError) as info:
        async for _ in cloud.chat.chat_stream(_request()):
            pass
    assert info.value.kind is ErrorKind.UNAVAILABLE


@pytest.mark.parametrize("stream", [False, True])
async def test_hanging_upstream_times_out(make_cloud: Any, sim: SimHandle, stream: bool) -> None:
    cloud = await make_cloud(upstream_timeout_s=0.3)
    sim.fault(service="generation", hang=True, times=1)
    with pytest.raises(ProviderError) as info:
        await _call(cloud, stream)
    assert info.value.kind is ErrorKind.TIMEOUT
