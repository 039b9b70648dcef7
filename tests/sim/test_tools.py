"""Function calling on the native text-generation endpoint: SDK and exact wire shapes."""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

import pytest
import requests
from dashscope import Generation
from jsonschema import Draft202012Validator

from tests.conftest import SimHandle
from tests.sim.native_wire import TEXT_PATH, choice, events, post, stream_chunks

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
            },
            "required": ["city", "days"],
            "additionalProperties": False,
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_local_time",
        "description": "Local time in a timezone",
        "parameters": {
            "type": "object",
            "properties": {"timezone": {"type": "string"}},
            "required": ["timezone"],
        },
    },
}
STOCK = {"type": "function", "function": {"name": "stock_price", "description": "Share price of a company"}}
TOOLS = [WEATHER, TIME, STOCK]
BOTH = [{"role": "user", "content": "What is the weather and the local time in city Hangzhou?"}]


def _call(**kw: Any) -> Any:
    kw.setdefault("model", "qwen-plus")
    kw.setdefault("result_format", "message")
    r = Generation.call(**kw)
    if kw.get("stream"):
        parts = list(r)
        assert all(p.status_code == 200 for p in parts), parts
        return parts
    assert r.status_code == 200, r
    return r


def _schema(tool: dict[str, Any]) -> dict[str, Any]:
    return tool["function"].get("parameters") or {"type": "object"}


def _body(messages: list[dict[str, Any]], **params: Any) -> dict[str, Any]:
    return {
        "model": "qwen-plus",
        "input": {"messages": messages},
        "parameters": {"result_format": "message", **params},
    }


def test_single_call_non_streamed_shape_and_valid_arguments(ds: SimHandle) -> None:
    msgs = [{"role": "user", "content": "Weather forecast for city Paris, days 3, unit is Celsius"}]
    r = _call(messages=msgs, tools=TOOLS)
    c = r.output.choices[0]
    assert c.finish_reason == "tool_calls"
    assert c.message.role == "assistant" and c.message.content == ""
    [call] = c.message.tool_calls
    assert call["index"] == 0 and call["type"] == "function"
    assert re.fullmatch(r"call_[0-9a-f]{24}", call["id"])
    assert call["function"]["name"] == "get_weather"
    args = json.loads(call["function"]["arguments"])
    assert args == {"city": "Paris", "days": 3, "unit": "celsius"}  # hints from the prompt
    assert Draft202012Validator(_schema(WEATHER)).is_valid(args)
    assert r.usage.output_tokens == 1 + -(-len(call["function"]["arguments"]) // 8)


def test_arguments_without_hints_are_minimal_and_valid(ds: SimHandle) -> None:
    r = _call(messages=[{"role": "user", "content": "weather in Hangzhou?"}], tools=[WEATHER])
    args = json.loads(r.output.choices[0].message.tool_calls[0]["function"]["arguments"])
    assert args == {"city": "sim-city", "days": 1}
    assert Draft202012Validator(_schema(WEATHER)).is_valid(args)


def test_auto_without_a_matching_tool_answers_in_text(ds: SimHandle) -> None:
    r = _call(messages=[{"role": "user", "content": "Tell me a joke"}], tools=TOOLS)
    c = r.output.choices[0]
    assert c.finish_reason == "stop"
    assert c.message.content == "Simulated answer: Tell me a joke"
    assert "tool_calls" not in c.message


def test_tools_are_billed_as_input(ds: SimHandle) -> None:
    msgs = [{"role": "user", "content": "Tell me a joke"}]
    plain = _call(messages=msgs)
    with_tools = _call(messages=msgs, tools=TOOLS)
    assert with_tools.usage.input_tokens > plain.usage.input_tokens
    assert with_tools.output.choices[0].message.content == plain.output.choices[0].message.content


def test_tool_choice_none_required_and_named(ds: SimHandle) -> None:
    none = _call(messages=BOTH, tools=TOOLS, tool_choice="none")
    assert none.output.choices[0].finish_reason == "stop"
    assert "tool_calls" not in none.output.choices[0].message
    joke = [{"role": "user", "content": "Tell me a joke"}]
    required = _call(messages=joke, tools=TOOLS, tool_choice="required")
    assert [t["function"]["name"] for t in required.output.choices[0].message.tool_calls] == ["get_weather"]
    named = {"type": "function", "function": {"name": "stock_price"}}
    forced = _call(messages=BOTH, tools=TOOLS, tool_choice=named, parallel_tool_calls=True)
    [call] = forced.output.choices[0].message.tool_calls
    assert call["function"]["name"] == "stock_price" and call["function"]["arguments"] == "{}"


def test_best_match_alone_unless_parallel(ds: SimHandle) -> None:
    single = _call(messages=BOTH, tools=[TIME, WEATHER])
    # "local" and "time" both hit get_local_time's name: score 4 beats get_weather's 2 + 1 ("city" in its description).
    assert [t["function"]["name"] for t in single.output.choices[0].message.tool_calls] == ["get_local_time"]
    both = _call(messages=BOTH, tools=TOOLS, parallel_tool_calls=True)
    calls = both.output.choices[0].message.tool_calls
    assert [(t["index"], t["function"]["name"]) for t in calls] == [(0, "get_weather"), (1, "get_local_time")]
    assert len({t["id"] for t in calls}) == 2
    assert json.loads(calls[1]["function"]["arguments"]) == {"timezone": "sim-timezone"}


def test_description_words_match_too(ds: SimHandle) -> None:
    r = _call(messages=[{"role": "user", "content": "What is the share price of ACME?"}], tools=TOOLS)
    assert r.output.choices[0].message.tool_calls[0]["function"]["name"] == "stock_price"


def test_incremental_stream_exact_chunks(ds: SimHandle) -> None:
    chunks = stream_chunks(
        ds, TEXT_PATH, _body(BOTH, tools=TOOLS, parallel_tool_calls=True, incremental_output=True)
    )
    reasons = [choice(c)["finish_reason"] for c in chunks]
    assert reasons == ["null"] * (len(chunks) - 1) + ["tool_calls"]
    entries = [choice(c)["message"]["tool_calls"] for c in chunks]
    assert all(choice(c)["message"]["content"] == "" for c in chunks)
    assert all(choice(c)["message"]["role"] == "assistant" for c in chunks)
    # first chunk: the head of call 0 with its name and the first 8 characters of arguments
    [head0] = entries[0]
    assert head0["index"] == 0 and head0["id"].startswith("call_") and head0["type"] == "function"
    assert head0["function"]["name"] == "get_weather" and len(head0["function"]["arguments"]) == 8
    # continuations: same index, id "", type, arguments only
    heads = [e for es in entries for e in es if e["id"]]
    assert [h["index"] for h in heads] == [0, 1]
    for es in entries:
        for e in es:
            if not e["id"]:
                assert e["id"] == "" and e["type"] == "function" and set(e["function"]) == {"arguments"}
    # one chunk carries call 0's empty tail and call 1's head
    pair = [es for es in entries if len(es) == 2]
    assert len(pair) == 1 and [e["index"] for e in pair[0]] == [0, 1]
    assert pair[0][0]["function"]["arguments"] == "" and pair[0][1]["function"]["name"] == "get_local_time"
    args = ["", ""]
    for es in entries:
        for e in es:
            args[e["index"]] += e["function"]["arguments"]
    assert json.loads(args[0]) == {"city": "Hangzhou", "days": 1}
    assert json.loads(args[1]) == {"timezone": "sim-timezone"}
    usage = [c["usage"]["output_tokens"] for c in chunks]
    assert usage == sorted(usage) and len(set(usage)) == len(usage)
    assert all(
        c["usage"]["total_tokens"] == c["usage"]["input_tokens"] + c["usage"]["output_tokens"] for c in chunks
    )
    whole = post(ds, TEXT_PATH, _body(BOTH, tools=TOOLS, parallel_tool_calls=True)).json()
    assert whole["usage"] == chunks[-1]["usage"]
    assert [t["function"]["arguments"] for t in choice(whole)["message"]["tool_calls"]] == args


def test_cumulative_stream_repeats_calls_so_far(ds: SimHandle) -> None:
    body = _body(BOTH, tools=TOOLS, parallel_tool_calls=True, incremental_output=False)
    chunks = stream_chunks(ds, TEXT_PATH, body)
    calls = [choice(c)["message"]["tool_calls"] for c in chunks]
    assert len(calls[0]) == 1 and len(calls[-1]) == 2
    ids = {c["id"] for c in calls[-1]}
    for prev, cur in itertools.pairwise(calls):
        for before, after in zip(prev, cur, strict=False):
            assert after["function"]["arguments"].startswith(before["function"]["arguments"])
            assert after["id"] == before["id"] and after["function"]["name"] == before["function"]["name"]
    assert all(e["id"] in ids for c in calls for e in c)
    assert json.loads(calls[-1][0]["function"]["arguments"]) == {"city": "Hangzhou", "days": 1}
    assert choice(chunks[-1])["finish_reason"] == "tool_calls"


def test_sdk_stream_incremental_and_sdk_merged(ds: SimHandle) -> None:
    kw = {"messages": BOTH, "tools": TOOLS, "parallel_tool_calls": True, "stream": True}
    parts = list(_call(incremental_output=True, **kw))
    args: dict[int, str] = {}
    for p in parts:
        for e in p.output.choices[0].message.get("tool_calls") or []:
            args[e["index"]] = args.get(e["index"], "") + e["function"]["arguments"]
    assert json.loads(args[1]) == {"timezone": "sim-timezone"}
    merged = list(_call(incremental_output=False, **kw))[-1].output.choices[0]
    assert merged.finish_reason == "tool_calls"
    assert [json.loads(t["function"]["arguments"]) for t in merged.message.tool_calls] == [
        {"city": "Hangzhou", "days": 1},
        {"timezone": "sim-timezone"},
    ]
    assert [t["function"]["name"] for t in merged.message.tool_calls] == ["get_weather", "get_local_time"]


def test_two_round_trips(ds: SimHandle) -> None:
    msgs: list[dict[str, Any]] = [{"role": "user", "content": "Weather in city Oslo?"}]
    first = _call(messages=msgs, tools=TOOLS).output.choices[0].message
    [call] = first.tool_calls
    msgs += [
        {"role": "assistant", "content": "", "tool_calls": first.tool_calls},
        {"role": "tool", "content": "Snow,  -3 C", "tool_call_id": call["id"]},
    ]
    second = _call(messages=msgs, tools=TOOLS).output.choices[0]
    assert second.finish_reason == "stop"
    assert second.message.content == "Simulated answer using get_weather: Snow, -3 C"
    # a forcing tool_choice left in place makes the model call again, as Bailian's docs warn
    again = _call(messages=msgs, tools=TOOLS, tool_choice="required").output.choices[0]
    assert again.finish_reason == "tool_calls"


def test_parallel_results_are_answered_together_when_streamed(ds: SimHandle) -> None:
    first = _call(messages=BOTH, tools=TOOLS, parallel_tool_calls=True).output.choices[0].message
    results = ["Sunny", "10:00"]
    msgs = [*BOTH, {"role": "assistant", "content": "", "tool_calls": first.tool_calls}]
    msgs += [
        {"role": "tool", "content": r, "tool_call_id": t["id"]}
        for r, t in zip(results, first.tool_calls, strict=True)
    ]
    parts = list(_call(messages=msgs, tools=TOOLS, stream=True, incremental_output=True))
    text = "".join(p.output.choices[0].message.content for p in parts)
    assert text == "Simulated answer using get_weather: Sunny; get_local_time: 10:00"


def test_cut_after_drops_mid_tool_call_stream(ds: SimHandle) -> None:
    ds.fault(service="generation", cut_after=2, times=1)
    got: list[Any] = []
    with pytest.raises(requests.exceptions.RequestException):
        for part in Generation.call(
            model="qwen-plus",
            messages=BOTH,
            tools=TOOLS,
            result_format="message",
            stream=True,
            incremental_output=True,
        ):
            got.append(part.output.choices[0].message.tool_calls)
    assert len(got) == 2
    assert got[0][0]["function"]["name"] == "get_local_time" and got[1][0]["id"] == ""
    assert ds.requests("generation")[-1]["status"] == 200


def test_error_event_mid_tool_call_stream(ds: SimHandle) -> None:
    ds.fault(service="generation", status=500, cut_after=3, times=1)
    r = post(ds, TEXT_PATH, _body(BOTH, tools=TOOLS, incremental_output=True), stream=True)
    got = events(r.text)
    assert [name for name, _ in got] == ["result"] * 3 + ["error"]
    assert got[-1][1]["code"] == "InternalError"
    assert all(choice(d)["finish_reason"] == "null" for _, d in got[:3])
    assert "id:4\nevent:error\n:HTTP_STATUS/500\n" in r.text


def test_invalid_output_fault_breaks_arguments_once(ds: SimHandle) -> None:
    ds.fault(service="generation", invalid_output=True, times=1)
    msgs = [{"role": "user", "content": "weather in city Rome"}]
    bad = _call(messages=msgs, tools=[WEATHER]).output.choices[0].message.tool_calls[0]
    validator = Draft202012Validator(_schema(WEATHER))
    assert not validator.is_valid(json.loads(bad["function"]["arguments"]))
    good = _call(messages=msgs, tools=[WEATHER]).output.choices[0].message.tool_calls[0]
    assert validator.is_valid(json.loads(good["function"]["arguments"]))


def test_legacy_finish_reason_switch(ds: SimHandle) -> None:
    ds.control("PUT", "/sim/config", json={"legacy_tool_finish_reason": True}).raise_for_status()
    c = _call(messages=BOTH, tools=TOOLS).output.choices[0]
    assert c.finish_reason == "stop" and c.message.tool_calls


@pytest.mark.parametrize(
    ("model", "params", "code", "message"),
    [
        ("qwen-vl-max", {}, "InvalidParameter", "does not support tools"),
        ("qwq-plus", {}, "InvalidParameter", "does not support tools"),
        ("qwen-long", {"tool_choice": "required"}, "InvalidParameter", '["none", "auto"]'),
        ("qwen-plus", {"tool_choice": "sometimes"}, "InvalidParameter", '["none", "auto", "required"]'),
        (
            "qwen-plus",
            {"tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "InvalidParameter",
            "'nope', which is not in tools",
        ),
        ("qwen3-32b", {"tool_choice": "required"}, "InternalError.Algo.InvalidParameter", "thinking mode"),
        (
            "qwen-plus",
            {"tool_choice": "required", "enable_thinking": True},
            "InternalError.Algo.InvalidParameter",
            "thinking mode",
        ),
    ],
)
def test_refusals(ds: SimHandle, model: str, params: dict[str, Any], code: str, message: str) -> None:
    r = Generation.call(model=model, messages=BOTH, tools=TOOLS, result_format="message", **params)
    assert (r.status_code, r.code) == (400, code), r
    assert message in r.message
    assert ds.requests("generation")[-1]["status"] == 400


def test_thinking_off_allows_forcing_and_bad_tool_specs_are_refused(ds: SimHandle) -> None:
    ok = _call(model="qwen3-32b", messages=BOTH, tools=TOOLS, tool_choice="required", enable_thinking=False)
    assert ok.output.choices[0].finish_reason == "tool_calls"
    r = Generation.call(model="qwen-plus", messages=BOTH, tools=[{"type": "function", "function": {}}])
    assert (r.status_code, r.code) == (400, "InvalidParameter") and "function.name" in r.message


def test_capability_override_from_config(ds: SimHandle) -> None:
    assert Generation.call(model="qwen-vl-max", messages=BOTH, tools=TOOLS).status_code == 400
    r = ds.control("PUT", "/sim/config", json={"model_capabilities": {"qwen-vl-max": {"tools": True}}})
    assert r.status_code == 200 and r.json()["model_capabilities"] == {"qwen-vl-max": {"tools": True}}
    assert (
        _call(model="qwen-vl-max", messages=BOTH, tools=TOOLS).output.choices[0].finish_reason == "tool_calls"
    )
    bad = ds.control("PUT", "/sim/config", json={"model_capabilities": {"qwen-plus": {"teleport": True}}})
    assert bad.status_code == 400


def test_text_result_format_still_reports_calls_as_choices(ds: SimHandle) -> None:
    body = {"model": "qwen-plus", "input": {"messages": BOTH}, "parameters": {"tools": TOOLS}}
    called = post(ds, TEXT_PATH, body).json()["output"]
    assert "text" not in called and choice({"output": called})["finish_reason"] == "tool_calls"
    joke = {**body, "input": {"messages": [{"role": "user", "content": "a joke"}]}}
    assert post(ds, TEXT_PATH, joke).json()["output"] == {
        "text": "Simulated answer: a joke",
        "finish_reason": "stop",
    }
