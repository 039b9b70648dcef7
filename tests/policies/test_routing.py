"""The router over in-process providers: chain order, breakers, retries, what may and may not fall back.

End-to-end behaviour through the real gateway and simulator is in tests/gateway/test_resilience.py;
these tests pin the decision logic with providers whose every call is counted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.context import RequestContext
from gateway.settings import RouteConfig, Settings
from policies.routing import ProviderRegistry, Router, StreamInterrupted
from providers.base import (
    AudioData,
    ChatChunk,
    ChatRequest,
    ChatResult,
    ErrorKind,
    Health,
    ProviderError,
    SpeechResult,
    SynthesizeRequest,
)


class FakeChat:
    """A chat provider whose behaviour per model is a queue of outcomes (errors or 'ok')."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls: list[str] = []
        self.script: dict[str, list[Any]] = {}
        self.chunks_before_cut: dict[str, int] = {}
        self.hang: set[str] = set()

    async def load(self) -> None: ...
    async def unload(self) -> None: ...
    async def health(self) -> Health:
        return Health(True)

    def models(self) -> list[str]:
        return []

    def _next(self, model: str) -> Any:
        queue = self.script.get(model)
        return queue.pop(0) if queue else "ok"

    async def _begin(self, request: ChatRequest) -> None:
        """Record the call, then hang or fail as scripted for its model."""
        self.calls.append(request.model)
        if request.model in self.hang:
            await asyncio.sleep(30)
        outcome = self._next(request.model)
        if isinstance(outcome, BaseException):
            raise outcome

    async def chat(self, request: ChatRequest) -> ChatResult:
        await self._begin(request)
        return ChatResult(text=f"{self.name}:{request.model}", model=request.model)

    async def chat_stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        await self._begin(request)
        cut = self.chunks_before_cut.get(request.model)
        for i in range(5):
            if cut is not None and i == cut:
                raise ProviderError(ErrorKind.RETRYABLE, "connection reset mid-stream")
            yield ChatChunk(delta=f"{self.name}{i} ")
        yield ChatChunk(finish_reason="stop")


def err(kind: ErrorKind, code: str | None = None, **kw: Any) -> ProviderError:
    return ProviderError(kind, f"simulated {code or kind.value}", code=code, **kw)


def make_router(**settings: Any) -> tuple[Router, FakeChat, FakeChat, list[tuple[str, dict]]]:
    base: dict[str, Any] = {
        "dashscope_api_key": "sk-x",
        "retry": {"attempts": 3, "base_delay_s": 0.001, "max_delay_s": 0.002},
        "breaker": {"consecutive_failures": 3, "min_calls": 100, "cooldown_s": 0.2},
        "deadlines": {"chat": 5.0, "first_byte": 0.2},
        "routes": {
            "chat": RouteConfig(chain=["bailian:qwen-plus", "bailian:qwen-turbo", "local:smollm2"]),
            "asr": RouteConfig(chain=["local:whisper"]),
            "tts": RouteConfig(chain=["bailian:cosyvoice-v2", "local:piper-joe"]),
        },
    }
    base.update(settings)
    registry = ProviderRegistry()
    cloud, local = FakeChat("bailian"), FakeChat("local")
    registry.register("chat", cloud)
    registry.register("chat", local)
    router = Router(Settings(**base), registry)
    events: list[tuple[str, dict]] = []
    router.listeners.append(lambda e, f: events.append((e, f)))
    return router, cloud, local, events


def ctx() -> RequestContext:
    return RequestContext(request_id="t")


async def test_first_target_answers() -> None:
    router, cloud, local, events = make_router()
    c = ctx()
    result = await router.chat(ChatRequest(model="qwen-plus", messages=[]), c)
    assert result.text == "bailian:qwen-plus"
    assert (c.provider, c.fallback) == ("bailian:qwen-plus", False)
    assert cloud.calls == ["qwen-plus"] and local.calls == []
    assert [e for e, _ in events] == ["attempt"]
    assert events[0][1]["outcome"] == "ok" and events[0][1]["target"] == "bailian:qwen-plus"


async def test_transient_errors_are_retried_on_the_same_target() -> None:
    router, cloud, _, events = make_router()
    cloud.script["qwen-plus"] = [err(ErrorKind.RETRYABLE, "InternalError")] * 2
    c = ctx()
    await router.chat(ChatRequest(model="qwen-plus", messages=[]), c)
    assert cloud.calls == ["qwen-plus"] * 3
    assert (c.provider, c.fallback) == ("bailian:qwen-plus", False)
    assert [f["attempt"] for e, f in events if e == "retry"] == [1, 2]


async def test_exhausted_retries_fall_back_in_chain_order() -> None:
    router, cloud, _local, events = make_router()
    cloud.script["qwen-plus"] = [err(ErrorKind.RETRYABLE)] * 3
    cloud.script["qwen-turbo"] = [err(ErrorKind.UNAVAILABLE, "ModelUnavailable")]
    c = ctx()
    result = await router.chat(ChatRequest(model="qwen-plus", messages=[]), c)
    assert result.text == "local:smollm2"
    assert cloud.calls == ["qwen-plus"] * 3 + ["qwen-turbo"]  # UNAVAILABLE is not retried
    assert (c.provider, c.fallback) == ("local:smollm2", True)
    hops = [(f["from_target"], f["to_target"]) for e, f in events if e == "fallback"]
    assert hops == [("bailian:qwen-plus", "bailian:qwen-turbo"), ("bailian:qwen-turbo", "local:smollm2")]


@pytest.mark.parametrize(
    ("kind", "code"),
    [(ErrorKind.CONTENT_FILTERED, "DataInspectionFailed"), (ErrorKind.BAD_REQUEST, "InvalidParameter")],
)
async def test_content_filter_and_bad_request_never_fall_back(kind: ErrorKind, code: str) -> None:
    router, cloud, local, _ = make_router()
    cloud.script["qwen-plus"] = [err(kind, code)]
    with pytest.raises(ProviderError) as info:
        await router.chat(ChatRequest(model="qwen-plus", messages=[]), ctx())
    assert info.value.kind is kind and info.value.code == code
    assert cloud.calls == ["qwen-plus"] and local.calls == []


async def test_auth_failure_falls_back_and_is_logged_once_per_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    router, cloud, _local, _ = make_router()
    cloud.script["qwen-plus"] = [err(ErrorKind.AUTH, "InvalidApiKey")] * 2
    cloud.script["qwen-turbo"] = [err(ErrorKind.AUTH, "InvalidApiKey")] * 2
    with caplog.at_level(logging.WARNING, logger="talkgate.routing"):
        for _ in range(2):
            c = ctx()
            assert (await router.chat(ChatRequest(model="qwen-plus", messages=[]), c)).text == "local:smollm2"
            assert c.fallback
    assert cloud.calls == ["qwen-plus", "qwen-turbo"] * 2  # AUTH is not retried
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert sorted(r.args[0].__str__() for r in errors) == ["bailian:qwen-plus", "bailian:qwen-turbo"]
    assert all("InvalidApiKey" in r.getMessage() for r in errors)


async def test_open_breaker_skips_the_target_without_calling_it() -> None:
    router, cloud, _local, events = make_router(
        routes={
            "chat": RouteConfig(chain=["bailian:qwen-plus", "local:smollm2"]),
            "asr": RouteConfig(chain=["local:whisper"]),
            "tts": RouteConfig(chain=["local:piper"]),
        },
        retry={"attempts": 1},
    )
    cloud.script["qwen-plus"] = [err(ErrorKind.RETRYABLE)] * 3
    for _ in range(3):
        await router.chat(ChatRequest(model="qwen-plus", messages=[]), ctx())
    assert cloud.calls == ["qwen-plus"] * 3
    assert (
        "breaker",
        {
            "target": "bailian:qwen-plus",
            "state": "open",
            "previous": "closed",
            "reason": "3 consecutive failures",
        },
    ) in events
    for _ in range(5):
        c = ctx()
        await router.chat(ChatRequest(model="qwen-plus", messages=[]), c)
        assert c.provider == "local:smollm2"
    assert cloud.calls == ["qwen-plus"] * 3  # no upstream call while open
    assert [f["reason"] for e, f in events if e == "skip"] == ["circuit open"] * 5
    # After the cooldown one probe goes upstream; it succeeds and traffic returns.
    await asyncio.sleep(0.25)
    c = ctx()
    await router.chat(ChatRequest(model="qwen-plus", messages=[]), c)
    assert c.provider == "bailian:qwen-plus" and cloud.calls == ["qwen-plus"] * 4
    states = [f["state"] for e, f in events if e == "breaker"]
    assert states == ["open", "half_open", "closed"]


async def test_retries_stop_when_the_breaker_opens_mid_request() -> None:
    router, cloud, _local, _ = make_router(
        retry={"attempts": 10, "base_delay_s": 0.001, "max_delay_s": 0.001}
    )
    cloud.script["qwen-plus"] = [err(ErrorKind.RETRYABLE)] * 10
    c = ctx()
    await router.chat(ChatRequest(model="qwen-plus", messages=[]), c)
    assert cloud.calls.count("qwen-plus") == 3  # the breaker (3 consecutive) cut the retries short
    assert c.provider == "bailian:qwen-turbo"


async def test_everything_unavailable_names_each_target_and_why() -> None:
    router, cloud, local, _ = make_router(retry={"attempts": 1})
    cloud.script["qwen-plus"] = [err(ErrorKind.RETRYABLE)] * 3
    for _ in range(3):
        await router.chat(ChatRequest(model="qwen-plus", messages=[]), ctx())
    cloud.script["qwen-turbo"] = [err(ErrorKind.RATE_LIMITED, "Throttling", retry_after=30)]
    local.script["smollm2"] = [ProviderError(ErrorKind.UNAVAILABLE, "not installed")]
    with pytest.raises(ProviderError) as info:
        await router.chat(ChatRequest(model="qwen-plus", messages=[]), ctx())
    message = info.value.message
    assert info.value.kind is ErrorKind.UNAVAILABLE
    assert "bailian:qwen-plus: circuit open" in message
    assert "bailian:qwen-turbo: rate_limited: simulated Throttling" in message
    assert "local:smollm2: unavailable: not installed" in message


async def test_unconfigured_provider_is_named() -> None:
    router, _cloud, _local, _ = make_router()
    router.registry = ProviderRegistry()  # nothing registered at all
    with pytest.raises(ProviderError) as info:
        await router.chat(ChatRequest(model="qwen-plus", messages=[]), ctx())
    assert "bailian:qwen-plus: provider 'bailian' is not configured" in info.value.message


async def test_all_targets_throttled_keeps_rate_limited_meaning() -> None:
    router, cloud, _, _ = make_router(
        routes={
            "chat": RouteConfig(chain=["bailian:qwen-plus"]),
            "asr": RouteConfig(chain=["local:w"]),
            "tts": RouteConfig(chain=["local:p"]),
        },
        retry={"attempts": 1},
    )
    cloud.script["qwen-plus"] = [err(ErrorKind.RATE_LIMITED, "Throttling", retry_after=7)]
    with pytest.raises(ProviderError) as info:
        await router.chat(ChatRequest(model="qwen-plus", messages=[]), ctx())
    assert info.value.kind is ErrorKind.RATE_LIMITED and info.value.retry_after == 7


async def test_hang_times_out_then_falls_back_within_the_deadline() -> None:
    router, cloud, _local, _ = make_router(
        upstream_timeout_s=0.1, retry={"attempts": 2, "base_delay_s": 0.001}
    )
    cloud.hang = {"qwen-plus", "qwen-turbo"}
    c = ctx()
    loop = asyncio.get_running_loop()
    started = loop.time()
    result = await router.chat(ChatRequest(model="qwen-plus", messages=[]), c)
    assert result.text == "local:smollm2"
    assert loop.time() - started < 2.0  # 4 attempts × 0.1 s, not 30 s
    assert cloud.calls == ["qwen-plus", "qwen-plus", "qwen-turbo", "qwen-turbo"]


async def test_deadline_spent_is_a_timeout_naming_the_targets() -> None:
    router, cloud, local, _ = make_router(deadlines={"chat": 0.3, "first_byte": 0.2}, upstream_timeout_s=10)
    cloud.hang = {"qwen-plus"}
    with pytest.raises(ProviderError) as info:
        await router.chat(ChatRequest(model="qwen-plus", messages=[]), ctx())
    assert info.value.kind is ErrorKind.TIMEOUT
    assert "bailian:qwen-plus" in info.value.message and "deadline" in info.value.message
    assert local.calls == []


# --------------------------------------------------------------------------- streams


async def collect(it: AsyncIterator[ChatChunk]) -> str:
    return "".join([c.delta async for c in it])


async def test_stream_failing_before_its_first_chunk_fails_over_transparently() -> None:
    router, cloud, _local, _ = make_router(retry={"attempts": 1})
    cloud.script["qwen-plus"] = [err(ErrorKind.RETRYABLE)]
    cloud.chunks_before_cut["qwen-turbo"] = 0  # opens, then dies before any chunk
    c = ctx()
    text = await collect(await router.chat_stream(ChatRequest(model="qwen-plus", messages=[]), c))
    assert text == "local0 local1 local2 local3 local4 "
    assert (c.provider, c.fallback) == ("local:smollm2", True)


async def test_stream_first_byte_timeout_fails_over() -> None:
    router, cloud, _local, _ = make_router(retry={"attempts": 1})
    cloud.hang = {"qwen-plus", "qwen-turbo"}
    c = ctx()
    text = await collect(await router.chat_stream(ChatRequest(model="qwen-plus", messages=[]), c))
    assert text.startswith("local0")
    assert cloud.calls == ["qwen-plus", "qwen-turbo"]


async def test_stream_cut_after_first_chunk_is_interrupted_not_failed_over() -> None:
    router, cloud, local, events = make_router()
    cloud.chunks_before_cut["qwen-plus"] = 2
    c = ctx()
    it = await router.chat_stream(ChatRequest(model="qwen-plus", messages=[]), c)
    got = []
    with pytest.raises(StreamInterrupted) as info:
        async for chunk in it:
            got.append(chunk.delta)
    assert got == ["bailian0 ", "bailian1 "]
    assert info.value.cause.kind is ErrorKind.RETRYABLE
    assert cloud.calls == ["qwen-plus"] and local.calls == []  # exactly one upstream call, no failover
    assert ("interrupted", "retryable") in [
        (f["outcome"], f["error_kind"]) for e, f in events if e == "attempt"
    ]


async def test_stream_stall_after_first_chunk_is_interrupted() -> None:
    router, cloud, _, _ = make_router()

    async def stalling(request: ChatRequest) -> AsyncIterator[ChatChunk]:
        yield ChatChunk(delta="hello ")
        await asyncio.sleep(30)
        yield ChatChunk(delta="never")

    cloud.chat_stream = stalling  # type: ignore[method-assign]
    it = await router.chat_stream(ChatRequest(model="qwen-plus", messages=[]), ctx())
    with pytest.raises(StreamInterrupted) as info:
        await collect(it)
    assert info.value.cause.kind is ErrorKind.TIMEOUT


async def test_stream_content_filter_is_not_bypassed() -> None:
    router, cloud, local, _ = make_router()
    cloud.script["qwen-plus"] = [err(ErrorKind.CONTENT_FILTERED, "DataInspectionFailed")]
    with pytest.raises(ProviderError) as info:
        await router.chat_stream(ChatRequest(model="qwen-plus", messages=[]), ctx())
    assert info.value.kind is ErrorKind.CONTENT_FILTERED and local.calls == []


# --------------------------------------------------------------------------- other capabilities


class FakeTTS:
    def __init__(self, name: str, fail: ProviderError | None = None) -> None:
        self.name = name
        self.fail = fail
        self.voices: list[str] = []

    async def synthesize(self, request: SynthesizeRequest) -> SpeechResult:
        self.voices.append(request.voice)
        if self.fail:
            raise self.fail
        return SpeechResult(audio=AudioData(b"\0\0", 16000))


async def test_tts_fallback_maps_the_cloud_voice_to_a_local_voice() -> None:
    router, *_ = make_router(voices={"local": {"longxiaochun_v2": "joe", "*": "amy"}})
    cloud = FakeTTS("bailian", err(ErrorKind.UNAVAILABLE))
    local = FakeTTS("local")
    router.registry.register("tts", cloud)
    router.registry.register("tts", local)
    c = ctx()
    await router.synthesize(SynthesizeRequest(model="cosyvoice-v2", text="hi", voice="longxiaochun_v2"), c)
    assert cloud.voices == ["longxiaochun_v2"] and local.voices == ["joe"]
    assert c.provider == "local:piper-joe"


async def test_a_rejected_answer_is_a_failed_attempt_retried_then_failed_over() -> None:
    """``check`` (an answer of the wrong shape) works like an upstream error of its kind."""
    router, _cloud, _local, events = make_router()
    rejected: list[str] = []

    def check(result: ChatResult) -> None:
        if result.text.startswith("bailian"):
            rejected.append(result.text)
            raise ProviderError(ErrorKind.RETRYABLE, "not JSON", code="SchemaViolation")

    c = ctx()
    result = await router.chat(ChatRequest(model="qwen-plus", messages=[]), c, check)
    assert result.text == "local:smollm2" and c.fallback
    assert len(rejected) == 6  # three attempts on each cloud target
    codes = [f.get("error_code") for e, f in events if e == "attempt" and f["outcome"] == "error"]
    assert codes == ["SchemaViolation"] * 6


async def test_skipped_targets_are_never_called_and_a_cut_collected_stream_fails_over() -> None:
    router, cloud, _local, _ = make_router()
    c = ctx()

    def skip(target: Any) -> str | None:
        return "not tried: it takes no images" if target.model == "qwen-plus" else None

    result = await router.chat(ChatRequest(model="qwen-plus", messages=[]), c, skip=skip)
    assert result.text == "bailian:qwen-turbo" and cloud.calls == ["qwen-turbo"]

    cloud.chunks_before_cut["qwen-plus"] = 2  # every attempt on qwen-plus is cut after 2 chunks

    async def collect(stream: AsyncIterator[ChatChunk]) -> list[ChatChunk]:
        return [chunk async for chunk in stream]

    chunks = await router.chat_collected(ChatRequest(model="qwen-plus", messages=[]), ctx(), collect)
    assert "".join(ch.delta for ch in chunks) == "bailian0 bailian1 bailian2 bailian3 bailian4 "
    assert cloud.calls[-1] == "qwen-turbo"  # the cut stream never reached a client: it failed over
