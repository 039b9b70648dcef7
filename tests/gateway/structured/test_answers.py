"""AnswerCheck: what counts as an answer of the requested shape (gateway/structured/answers.py)."""

from __future__ import annotations

import pytest

from gateway.structured.answers import AnswerCheck, assemble, is_structured
from providers.base import ChatChunk, ChatRequest, ChatResult, ProviderError, ToolCall, ToolCallDelta, Usage

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
TICKET = {"type": "function", "function": {"name": "open_ticket", "parameters": {"type": "object"}}}
PERSON = {
    "type": "json_schema",
    "json_schema": {
        "name": "person",
        "schema": {"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]},
    },
}


def request(**kw) -> ChatRequest:
    return ChatRequest(model="m", messages=[{"role": "user", "content": "hi"}], **kw)


def call(name: str, arguments: str) -> ChatResult:
    return ChatResult(text="", finish_reason="tool_calls", tool_calls=[ToolCall("call_1", name, arguments)])


def violation(check: AnswerCheck, result: ChatResult) -> str:
    with pytest.raises(ProviderError) as err:
        check(result)
    assert err.value.code == "SchemaViolation" and err.value.retryable
    return err.value.message


def test_tool_calls_must_name_an_offered_tool_with_valid_arguments() -> None:
    check = AnswerCheck(request(tools=[WEATHER, TICKET]))
    check(call("get_weather", '{"city": "Hangzhou", "unit": "c"}'))
    check(ChatResult(text="Which city?"))  # auto: text is an answer too
    assert "not offered" in violation(check, call("delete_everything", "{}"))
    assert "not JSON" in violation(check, call("get_weather", '{"city": "Hang'))
    assert "do not match" in violation(check, call("get_weather", '{"unit": "k"}'))
    assert "do not match" in violation(check, call("get_weather", '{"city": "X", "extra": 1}'))


def test_tool_choice_rules() -> None:
    required = AnswerCheck(request(tools=[WEATHER], tool_choice="required"))
    assert "required" in violation(required, ChatResult(text="no call"))
    named = AnswerCheck(
        request(
            tools=[WEATHER, TICKET], tool_choice={"type": "function", "function": {"name": "open_ticket"}}
        )
    )
    named(call("open_ticket", "{}"))
    assert "not offered" in violation(named, call("get_weather", '{"city": "X"}'))
    assert not is_structured(request(tools=[WEATHER], tool_choice="none"))


def test_json_formats() -> None:
    obj = AnswerCheck(request(response_format={"type": "json_object"}))
    obj(ChatResult(text='{"a": 1}'))
    assert "not a JSON object" in violation(obj, ChatResult(text="[1, 2]"))
    assert "not JSON" in violation(obj, ChatResult(text="Sure! {"))
    schema = AnswerCheck(request(response_format=PERSON))
    schema(ChatResult(text='{"age": 42}'))
    assert "does not match the schema" in violation(schema, ChatResult(text='{"age": "old"}'))
    schema(ChatResult(text='{"age": ', finish_reason="length"))  # cut by max_tokens: the client asked for it


def test_assemble_streamed_pieces() -> None:
    chunks = [
        ChatChunk(tool_calls=[ToolCallDelta(0, "call_a", "get_weather", '{"ci')]),
        ChatChunk(
            tool_calls=[
                ToolCallDelta(0, arguments='ty": "X"}'),
                ToolCallDelta(1, "call_b", "open_ticket", ""),
            ]
        ),
        ChatChunk(tool_calls=[ToolCallDelta(1, arguments="{}")], finish_reason="stop", usage=Usage(3, 4)),
    ]
    result = assemble(chunks)
    assert result.finish_reason == "tool_calls" and result.usage == Usage(3, 4)
    assert [(c.id, c.name, c.arguments) for c in result.tool_calls] == [
        ("call_a", "get_weather", '{"city": "X"}'),
        ("call_b", "open_ticket", "{}"),
    ]
