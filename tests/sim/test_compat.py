"""OpenAI-compatible mode through the official openai SDK against the simulator."""

from __future__ import annotations

import openai
import pytest

from tests.conftest import SimHandle

MESSAGES = [{"role": "user", "content": "Say hello to the team"}]


def _client(sim: SimHandle, key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=sim.compat_base, api_key=key or sim.api_key, max_retries=0, timeout=5)


def test_plain_completion(ds: SimHandle) -> None:
    r = _client(ds).chat.completions.create(model="qwen-plus", messages=MESSAGES)
    assert r.choices[0].message.content == "Simulated answer: Say hello to the team"
    assert r.choices[0].finish_reason == "stop"
    assert r.usage is not None
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (5, 7, 12)
    assert r.model == "qwen-plus" and r.id.startswith("chatcmpl-")


def test_stream_with_include_usage(ds: SimHandle) -> None:
    stream = _client(ds).chat.completions.create(
        model="qwen-plus",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
        max_tokens=3,
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Simulated answer: Say"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 3
    assert all(c.usage is None for c in chunks[:-1])


def test_stream_without_usage_has_no_usage_chunk(ds: SimHandle) -> None:
    chunks = list(_client(ds).chat.completions.create(model="qwen-plus", messages=MESSAGES, stream=True))
    assert all(c.choices for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_openai_style_errors(ds: SimHandle) -> None:
    with pytest.raises(openai.AuthenticationError) as auth:
        _client(ds, key="sk-nope").chat.completions.create(model="qwen-plus", messages=MESSAGES)
    assert auth.value.status_code == 401
    assert auth.value.body["code"] == "invalid_api_key"
    with pytest.raises(openai.NotFoundError) as missing:
        _client(ds).chat.completions.create(model="gpt-nonexistent", messages=MESSAGES)
    assert missing.value.body["code"] == "model_not_found"
    ds.fault(service="generation", status=429, retry_after=1, times=1)
    with pytest.raises(openai.RateLimitError) as limited:
        _client(ds).chat.completions.create(model="qwen-plus", messages=MESSAGES)
    assert limited.value.response.headers["retry-after"] == "1"
    assert limited.value.body["code"] == "limit_requests"


def test_mid_stream_error_raises_in_sdk(ds: SimHandle) -> None:
    ds.fault(service="generation", status=500, code="InternalError", cut_after=2, times=1)
    seen: list[str] = []
    with pytest.raises(openai.APIError) as err:
        for chunk in _client(ds).chat.completions.create(model="qwen-plus", messages=MESSAGES, stream=True):
            seen.append(chunk.choices[0].delta.content or "")
    assert len(seen) == 2
    assert err.value.code == "internal_error"
    assert err.value.message == "An internal error has occured, please try again later."


def test_bad_body_is_400(ds: SimHandle) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        _client(ds).chat.completions.create(model="qwen-plus", messages=[])
    assert bad.value.status_code == 400


def test_max_tokens_below_one_is_invalid_parameter(ds: SimHandle) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        _client(ds).chat.completions.create(model="qwen-plus", messages=MESSAGES, max_tokens=-1)
    assert bad.value.body["code"] == "invalid_parameter_error"
    assert "max_tokens" in bad.value.body["message"]
