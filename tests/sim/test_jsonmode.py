"""JSON mode (response_format) on the native endpoints: rules, content, the invalid-output fault."""

from __future__ import annotations

import json
from typing import Any

import pytest
from dashscope import Generation
from jsonschema import Draft202012Validator

from tests.conftest import SimHandle
from tests.sim.native_wire import TEXT_PATH, choice, stream_chunks

JSON_OBJECT = {"type": "json_object"}
ASK = [
    {"role": "system", "content": "Reply in JSON."},
    {"role": "user", "content": "Name a colour"},
]
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 2},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "email": {"type": "string", "format": "email"},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2, "uniqueItems": True},
        "address": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "zip": {"type": "string", "maxLength": 5}},
            "required": ["city", "zip"],
            "additionalProperties": False,
        },
        "role": {"enum": ["admin", "user"]},
        "active": {"type": "boolean"},
        "score": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
        "kind": {"const": "person"},
    },
    "required": ["name", "age", "email", "tags", "address", "role", "active", "score", "kind"],
    "additionalProperties": False,
}
PYDANTIC_STYLE = {
    "$defs": {
        "Item": {
            "type": "object",
            "properties": {
                "sku": {"type": "string"},
                "qty": {"type": "integer", "multipleOf": 5, "minimum": 7},
            },
            "required": ["sku", "qty"],
        }
    },
    "type": "object",
    "properties": {
        "items": {"type": "array", "items": {"$ref": "#/$defs/Item"}, "minItems": 1},
        "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        "id": {"oneOf": [{"type": "integer"}, {"type": "number"}]},
    },
    "required": ["items", "note", "id"],
}
ARRAY_TOP = {"type": "array", "items": {"type": "integer", "minimum": 10}, "minItems": 3, "uniqueItems": True}


def _schema_format(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "out", "schema": schema, "strict": True}}


def _content(model: str, messages: list[dict[str, Any]], **kw: Any) -> str:
    r = Generation.call(model=model, messages=messages, result_format="message", **kw)
    assert r.status_code == 200, r
    assert r.output.choices[0].finish_reason == "stop"
    return r.output.choices[0].message.content


def test_json_object_content_is_pretty_json(ds: SimHandle) -> None:
    text = _content("qwen-plus", ASK, response_format=JSON_OBJECT)
    assert json.loads(text) == {"answer": "Simulated answer: Name a colour"}
    assert "\n" in text  # pretty-printed, like Bailian's


def test_json_word_rule(ds: SimHandle) -> None:
    msgs = [{"role": "user", "content": "Name a colour"}]
    r = Generation.call(
        model="qwen-plus", messages=msgs, result_format="message", response_format=JSON_OBJECT
    )
    assert (r.status_code, r.code) == (400, "InvalidParameter")
    assert r.message == (
        "'messages' must contain the word 'json' in some form, to use 'response_format' of type 'json_object'."
    )
    # any case, in a user message, is enough
    assert json.loads(
        _content("qwen-plus", [{"role": "user", "content": "colour as Json"}], response_format=JSON_OBJECT)
    )


def test_scripted_json_answer_is_returned_as_is(ds: SimHandle) -> None:
    ds.control("PUT", "/sim/config", json={"answers": {"Name a colour": '{"colour": "teal"}'}})
    assert json.loads(_content("qwen-plus", ASK, response_format=JSON_OBJECT)) == {"colour": "teal"}


def test_json_object_streamed_pieces_join_into_json(ds: SimHandle) -> None:
    body = {
        "model": "qwen-plus",
        "input": {"messages": ASK},
        "parameters": {
            "result_format": "message",
            "incremental_output": True,
            "response_format": JSON_OBJECT,
        },
    }
    chunks = stream_chunks(ds, TEXT_PATH, body)
    text = "".join(choice(c)["message"]["content"] for c in chunks)
    assert json.loads(text) == {"answer": "Simulated answer: Name a colour"}
    assert choice(chunks[-1])["finish_reason"] == "stop"


@pytest.mark.parametrize("schema", [PERSON, PYDANTIC_STYLE, ARRAY_TOP], ids=["person", "pydantic", "array"])
def test_json_schema_content_validates(ds: SimHandle, schema: dict[str, Any]) -> None:
    msgs = [{"role": "user", "content": "Make one up"}]
    text = _content("qwen-plus-latest", msgs, response_format=_schema_format(schema))
    value = json.loads(text)
    errors = [e.message for e in Draft202012Validator(schema).iter_errors(value)]
    assert errors == []


def test_json_schema_takes_hints_from_the_prompt(ds: SimHandle) -> None:
    msgs = [{"role": "user", "content": "Person with name: Ada, age 36, role ADMIN and city Turin"}]
    value = json.loads(_content("sim-any", msgs, response_format=_schema_format(PERSON)))
    assert (value["name"], value["age"], value["role"], value["address"]["city"]) == (
        "Ada",
        36,
        "admin",
        "Turin",
    )


@pytest.mark.parametrize(
    ("model", "response_format", "params", "needle"),
    [
        ("qwen-plus", _schema_format(PERSON), {}, "does not support response_format json_schema"),
        ("deepseek-v3.1", JSON_OBJECT, {}, "does not support response_format json_object"),
        ("qwen3-32b", JSON_OBJECT, {}, "thinking mode"),
        ("qwen-plus", JSON_OBJECT, {"enable_thinking": True}, "thinking mode"),
        ("qwen-plus-latest", {"type": "json_schema", "json_schema": {"name": "x"}}, {}, "schema must be"),
        ("qwen-plus", {"type": "yaml"}, {}, "response_format.type"),
    ],
)
def test_refusals(
    ds: SimHandle, model: str, response_format: Any, params: dict[str, Any], needle: str
) -> None:
    r = Generation.call(
        model=model, messages=ASK, result_format="message", response_format=response_format, **params
    )
    assert (r.status_code, r.code) == (400, "InvalidParameter"), r
    assert needle in r.message


def test_qwen3_json_mode_works_with_thinking_off(ds: SimHandle) -> None:
    assert json.loads(_content("qwen3-32b", ASK, response_format=JSON_OBJECT, enable_thinking=False))


def test_invalid_output_fault_json_object(ds: SimHandle) -> None:
    ds.fault(service="generation", invalid_output=True, times=1)
    broken = _content("qwen-plus", ASK, response_format=JSON_OBJECT)
    with pytest.raises(json.JSONDecodeError):
        json.loads(broken)
    assert broken.startswith("{")
    assert json.loads(_content("qwen-plus", ASK, response_format=JSON_OBJECT))  # the fault is used up


@pytest.mark.parametrize("schema", [PERSON, ARRAY_TOP, {"type": "string", "enum": ["a", "b"]}])
def test_invalid_output_fault_json_schema_violates_but_parses(ds: SimHandle, schema: dict[str, Any]) -> None:
    fault = ds.fault(service="generation", model="qwen-plus-latest", invalid_output=True, times=1)
    assert fault["invalid_output"] is True
    msgs = [{"role": "user", "content": "Make one up"}]
    value = json.loads(_content("qwen-plus-latest", msgs, response_format=_schema_format(schema)))
    assert not Draft202012Validator(schema).is_valid(value)
    assert ds.requests("generation")[-1]["fault"] == fault["id"]


def test_invalid_output_with_unconstrained_schema_is_unparseable(ds: SimHandle) -> None:
    ds.fault(service="generation", invalid_output=True, times=1)
    msgs = [{"role": "user", "content": "anything"}]
    with pytest.raises(json.JSONDecodeError):
        json.loads(_content("sim-any", msgs, response_format=_schema_format({})))


def test_invalid_output_alone_is_a_valid_fault_but_bad_values_are_not(ds: SimHandle) -> None:
    r = ds.control("POST", "/sim/faults", json={"service": "generation", "invalid_output": "yes"})
    assert r.status_code == 400 and "invalid_output" in r.text
