"""Native text generation through the official dashscope SDK against the simulator."""

from __future__ import annotations

import httpx
from dashscope import Generation

from tests.conftest import SimHandle

MESSAGES = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "What is the capital of France?"},
]


def test_plain_message_format_uses_scripted_answer(ds: SimHandle) -> None:
    prompt = "What is the capital of France?"
    ds.control("PUT", "/sim/config", json={"answers": {prompt: "Paris is the capital of France."}})
    r = Generation.call(model="qwen-plus", messages=MESSAGES, result_format="message")
    assert r.status_code == 200
    assert r.output.choices[0].message.content == "Paris is the capital of France."
    assert r.output.choices[0].finish_reason == "stop"
    assert r.usage.output_tokens == 6  # whitespace words
    assert r.usage.input_tokens == 2 + 6
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    assert r.request_id
    [item] = ds.requests("generation")
    assert item["stream"] is False and item["model"] == "qwen-plus"
    assert item["body"]["input"]["messages"] == MESSAGES


def test_prompt_and_text_format_default_answer_is_deterministic(ds: SimHandle) -> None:
    first = Generation.call(model="qwen-turbo", prompt="tell me   a joke")
    second = Generation.call(model="qwen-turbo", prompt="tell me a joke")
    assert first.status_code == 200
    assert first.output.text == "Simulated answer: tell me a joke"
    assert first.output.text == second.output.text
    assert first.output.finish_reason == "stop"


def test_stream_incremental_chunks_and_cumulative_usage(ds: SimHandle) -> None:
    ds.control("PUT", "/sim/config", json={"answers": {MESSAGES[-1]["content"]: "It is Paris, of course."}})
    chunks = list(
        Generation.call(
            model="qwen-plus",
            messages=MESSAGES,
            result_format="message",
            stream=True,
            incremental_output=True,
        )
    )
    assert all(c.status_code == 200 for c in chunks)
    texts = [c.output.choices[0].message.content for c in chunks]
    assert "".join(texts) == "It is Paris, of course."
    assert [c.output.choices[0].finish_reason for c in chunks[:-1]] == ["null"] * (len(chunks) - 1)
    assert chunks[-1].output.choices[0].finish_reason == "stop"
    usage = [c.usage.output_tokens for c in chunks]
    assert usage == sorted(usage) and usage[-1] == 5
    assert ds.requests("generation")[-1]["stream"] is True


def test_stream_full_output_is_rebuilt_by_sdk(ds: SimHandle) -> None:
    """incremental_output=False: the SDK sends true and rebuilds cumulative text (reference §2.3)."""
    chunks = list(
        Generation.call(model="qwen-plus", prompt="one two three", stream=True, incremental_output=False)
    )
    texts = [c.output.text for c in chunks if c.output.text]
    assert texts[-1] == "Simulated answer: one two three"
    assert all(texts[-1].startswith(t) for t in texts)
    assert ds.requests("generation")[-1]["body"]["parameters"]["incremental_output"] is True


def test_server_side_cumulative_stream_when_incremental_false_on_wire(ds: SimHandle) -> None:
    body = {"model": "qwen-plus", "input": {"prompt": "a b"}, "parameters": {"incremental_output": False}}
    headers = {"Authorization": f"Bearer {ds.api_key}", "Accept": "text/event-stream"}
    r = httpx.post(f"{ds.http_base}/services/aigc/text-generation/generation", json=body, headers=headers)
    data = [line[5:] for line in r.text.splitlines() if line.startswith("data:")]
    assert '"text":"Simulated answer: a b"' in data[-1]
    assert '"text":"Simulated answer:"' in data[1]
    assert "event:result" in r.text and ":HTTP_STATUS/200" in r.text and "[DONE]" not in r.text


def test_max_tokens_gives_length_finish(ds: SimHandle) -> None:
    r = Generation.call(
        model="qwen-plus", prompt="alpha beta gamma delta", max_tokens=2, result_format="message"
    )
    assert r.output.choices[0].message.content == "Simulated answer:"
    assert r.output.choices[0].finish_reason == "length"
    assert r.usage.output_tokens == 2


def test_mid_stream_error_event_reaches_sdk(ds: SimHandle) -> None:
    ds.fault(service="generation", status=400, code="DataInspectionFailed", cut_after=2, times=1)
    chunks = list(Generation.call(model="qwen-plus", prompt="x y z", stream=True, incremental_output=True))
    assert [c.status_code for c in chunks] == [200, 200, 400]
    assert chunks[-1].code == "DataInspectionFailed"
    assert "inappropriate" not in (chunks[0].output.text or "")


def test_invalid_key_and_unknown_model(ds: SimHandle) -> None:
    r = Generation.call(model="qwen-plus", prompt="hi", api_key="sk-wrong")
    assert (r.status_code, r.code, r.message) == (401, "InvalidApiKey", "Invalid API-key provided.")
    r = Generation.call(model="no-such-model", prompt="hi")
    assert (r.status_code, r.code) == (404, "ModelNotFound")
    statuses = [i["status"] for i in ds.requests("generation")]
    assert statuses == [401, 404]


def test_max_tokens_below_one_is_invalid_parameter(ds: SimHandle) -> None:
    for bad in (-1, 0):
        r = Generation.call(model="qwen-plus", prompt="hi", max_tokens=bad)
        assert (r.status_code, r.code) == (400, "InvalidParameter"), r
        assert "max_tokens" in r.message
    assert [i["status"] for i in ds.requests("generation")] == [400, 400]
