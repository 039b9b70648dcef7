"""The simulator's schema instance generator, matching words and capability table (no server)."""

from __future__ import annotations

from typing import Any

import pytest
from jsonschema import Draft4Validator, Draft202012Validator

from gateway.sim.capabilities import capabilities, table_view, thinking_enabled
from gateway.sim.schema_gen import generate, invalid_instance
from gateway.sim.tools import Tool, ToolChoice, choose, words

SCHEMAS: list[dict[str, Any]] = [
    {"type": "object"},
    {"type": "object", "properties": {"a": {"type": "string"}}},
    {"type": ["null", "integer"], "minimum": 5},
    {"type": "number", "minimum": -10, "maximum": -3.5},
    {"type": "integer", "exclusiveMinimum": 2, "exclusiveMaximum": 4},
    {"type": "number", "multipleOf": 0.25, "minimum": 0.6},
    {"type": "integer", "multipleOf": 7, "minimum": 50, "maximum": 60},
    {"type": "string", "minLength": 12, "maxLength": 12},
    {"type": "string", "format": "date-time"},
    {"type": "array", "items": {"enum": ["x", "y", "z"]}, "minItems": 3, "uniqueItems": True},
    {"type": "array", "items": {"type": "boolean"}, "minItems": 2, "uniqueItems": True},
    {"type": "array", "contains": {"type": "integer", "minimum": 3}, "items": {"type": "integer"}},
    {"type": "object", "minProperties": 2, "properties": {"p": {"type": "string"}, "q": {"type": "null"}}},
    {
        "allOf": [{"$ref": "#/$defs/A"}, {"properties": {"b": {"const": 1}}, "required": ["b"]}],
        "$defs": {"A": {"type": "object", "properties": {"a": {"type": "boolean"}}, "required": ["a"]}},
    },
    {"oneOf": [{"type": "string", "maxLength": 3}, {"type": "string", "minLength": 2}]},
    {
        "anyOf": [
            {"type": "null"},
            {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]},
        ]
    },
    {
        "definitions": {"N": {"type": "object", "properties": {"next": {"$ref": "#/definitions/N"}}}},
        "$ref": "#/definitions/N",
    },
]


@pytest.mark.parametrize("schema", SCHEMAS, ids=[str(i) for i in range(len(SCHEMAS))])
def test_generated_instances_validate(schema: dict[str, Any]) -> None:
    value = generate(schema, "no hints here")
    assert [e.message for e in Draft202012Validator(schema).iter_errors(value)] == []
    assert generate(schema, "no hints here") == value  # deterministic


def test_draft4_boolean_exclusive_bounds() -> None:
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": 5, "exclusiveMinimum": True}},
        "required": ["n"],
    }
    value = generate(schema)
    assert value == {"n": 6} and Draft4Validator(schema).is_valid(value)


def test_hints_fill_values_only_when_they_fit() -> None:
    schema = {
        "type": "object",
        "properties": {
            "user_name": {"type": "string", "maxLength": 5},
            "count": {"type": "integer", "maximum": 10},
            "colour": {"enum": ["Red", "Blue"]},
            "verbose": {"type": "boolean"},
        },
        "required": ["count"],
    }
    value = generate(schema, 'user name "Bob", count=99, colour: blue, verbose yes')
    assert value == {"user_name": "Bob", "count": 0, "colour": "Blue", "verbose": True}
    assert Draft202012Validator(schema).is_valid(value)


@pytest.mark.parametrize("schema", SCHEMAS[1:], ids=[str(i) for i in range(1, len(SCHEMAS))])
def test_invalid_instance_violates(schema: dict[str, Any]) -> None:
    found, value = invalid_instance(schema)
    assert found and not Draft202012Validator(schema).is_valid(value)


def test_unconstrained_schema_has_no_invalid_instance() -> None:
    assert invalid_instance({}) == (False, None)
    assert invalid_instance({"description": "anything"}) == (False, None)


def test_matching_words() -> None:
    assert words("getWeather_forecast for Cities") == {"weather", "forecast", "citie"}
    assert words("北京天气") == {"北京", "京天", "天气"}
    tools = [Tool("search_docs", "Full-text search", None), Tool("天气查询", "", None)]
    assert choose(tools, ToolChoice("auto"), False, "明天北京天气怎么样", False) == [tools[1]]
    assert choose(tools, ToolChoice("auto"), True, "hello", False) == []


def test_capability_rows() -> None:
    assert capabilities("qwen-plus").tools and not capabilities("qwen-plus").json_schema
    assert capabilities("qwen-plus-latest").json_schema
    assert not capabilities("qwen-vl-max").tools and capabilities("qwen-vl-max").vision
    assert capabilities("qwen3-vl-plus").tools and capabilities("qwen3-vl-plus").vision
    assert capabilities("qwen3-235b-a22b-thinking-2507").thinking == "only"
    assert not capabilities("qwen-long").forced_tool_choice
    assert capabilities("unknown-model").tools is False
    caps = capabilities("qwen3-32b")
    assert thinking_enabled(caps, {}) and not thinking_enabled(caps, {"enable_thinking": False})
    assert capabilities("qwen-plus", {"qwen-plus": {"json_schema": True}}).json_schema
    assert {"prefixes", "tools", "vision"} <= set(table_view()[0])
