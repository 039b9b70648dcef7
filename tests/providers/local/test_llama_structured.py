"""JSON mode, JSON Schema and tool calls on llama.cpp, with the real SmolLM2-135M GGUF from PyPI.

What the grammar guarantees is the shape (parseable JSON, schema-valid arguments, only the
allowed tools); what a 135M model says inside it is weak, so the tests check shapes, not wisdom.
Answers are checked with ``jsonschema`` where it is installed, else with a small checker for
the keywords these schemas use.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from gateway.settings import Settings
from providers.base import ChatChunk, ChatRequest, ErrorKind, ProviderError
from providers.local import LlamaCppChatProvider, ModelPool
from providers.local.llama import _plain_messages
from providers.local.llama_structured import plan

pytestmark = pytest.mark.slow

WEATHER_PARAMS = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TIME_PARAMS = {
    "type": "object",
    "properties": {"zone": {"type": "string"}},
    "required": ["zone"],
    "additionalProperties": False,
}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the current weather in a city.",
            "parameters": WEATHER_PARAMS,
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "description": "Get the current time in a time zone.",
            "parameters": TIME_PARAMS,
        },
    },
]
PARAMS = {"get_weather": WEATHER_PARAMS, "get_time": TIME_PARAMS}
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "color": {"type": "string", "enum": ["red", "green", "blue"]},
    },
    "required": ["name", "age", "color"],
    "additionalProperties": False,
}
WEATHER_Q = [{"role": "user", "content": "What is the weather in Paris?"}]
PERSON_Q = [{"role": "user", "content": "Describe a person named Ann who is 30 and likes green."}]
ROUND_TWO = [
    *WEATHER_Q,
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "c"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 21, "sky": "sunny"}'},
]


def schema_errors(instance: Any, schema: dict[str, Any]) -> list[str]:
    """Why ``instance`` does not match ``schema`` (empty when it does)."""
    try:
        from jsonschema import Draft202012Validator
    except ImportError:
        return _hand_check(instance, schema, "$", schema)
    return [error.message for error in Draft202012Validator(schema).iter_errors(instance)]


_TYPES = {"object": dict, "string": str, "array": list, "boolean": bool}


def _hand_check(value: Any, schema: dict[str, Any], at: str, root: dict[str, Any]) -> list[str]:
    """The keywords these tests' schemas use: type, enum, properties, required,
    additionalProperties, items, and local $refs ("#" or "#/$defs/<name>")."""
    if "$ref" in schema:
        ref = schema["$ref"]
        return _hand_check(value, root if ref == "#" else root["$defs"][ref.split("/")[-1]], at, root)
    kind = schema.get("type")
    if kind == "integer" and (not isinstance(value, int) or isinstance(value, bool)):
        return [f"{at}: {value!r} is not an integer"]
    if kind in _TYPES and not isinstance(value, _TYPES[kind]):
        return [f"{at}: {value!r} is not of type {kind}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{at}: {value!r} is not one of {schema['enum']}"]
    errors: list[str] = []
    if isinstance(value, dict):
        props = schema.get("properties", {})
        errors += [f"{at}: {name!r} is required" for name in schema.get("required", []) if name not in value]
        if schema.get("additionalProperties") is False:
            errors += [f"{at}: {name!r} is not allowed" for name in value if name not in props]
        for name, sub in props.items():
            if name in value:
                errors += _hand_check(value[name], sub, f"{at}.{name}", root)
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            errors += _hand_check(item, schema["items"], f"{at}[{i}]", root)
    return errors


@pytest.fixture(scope="module")
def chat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaCppChatProvider]:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("data"),
        max_tokens_ceiling=160,
        local={"llm": {"smollm2": {}}},
    )
    pool = ModelPool(1)
    yield LlamaCppChatProvider(settings, pool)
    pool.shutdown()


def request(messages: list[dict[str, Any]], **fields: Any) -> ChatRequest:
    return ChatRequest(model="smollm2", messages=messages, temperature=0, **fields)


def named(name: str) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name}}


async def collect(chat: LlamaCppChatProvider, req: ChatRequest) -> list[ChatChunk]:
    return [chunk async for chunk in chat.chat_stream(req)]


# --------------------------------------------------------------------------- JSON answers


async def test_json_mode_returns_an_object(chat: LlamaCppChatProvider) -> None:
    question = [{"role": "user", "content": "Return a JSON object with the capital of France."}]
    result = await chat.chat(request(question, response_format={"type": "json_object"}))
    assert isinstance(json.loads(result.text), dict)
    assert result.finish_reason == "stop" and not result.tool_calls
    assert result.usage.completion_tokens > 3


async def test_json_schema_answer_is_valid(chat: LlamaCppChatProvider) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}
    result = await chat.chat(request(PERSON_Q, response_format=fmt))
    assert schema_errors(json.loads(result.text), PERSON) == []
    assert result.finish_reason == "stop"


async def test_json_schema_streams_as_generated(chat: LlamaCppChatProvider) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}
    req = request(PERSON_Q, response_format=fmt)
    chunks = await collect(chat, req)
    deltas = [c.delta for c in chunks if c.delta]
    assert len(deltas) > 5  # token by token, not one buffered piece
    assert schema_errors(json.loads("".join(deltas)), PERSON) == []
    assert chunks[-1].finish_reason == "stop" and chunks[-1].usage is not None
    assert "".join(deltas) == (await chat.chat(req)).text


# --------------------------------------------------------------------------- tool calls


async def test_required_tool_choice_gives_valid_calls(chat: LlamaCppChatProvider) -> None:
    result = await chat.chat(request(WEATHER_Q, tools=TOOLS, tool_choice="required"))
    assert result.finish_reason == "tool_calls" and result.text == ""
    assert len(result.tool_calls) == 1  # parallel_tool_calls unset: one call
    for i, call in enumerate(result.tool_calls):
        assert call.index == i and call.id.startswith("call_") and len(call.id) > 10
        assert schema_errors(json.loads(call.arguments), PARAMS[call.name]) == []


async def test_named_function_is_the_only_one_called(chat: LlamaCppChatProvider) -> None:
    # the question is about weather, the client forces get_time: the grammar admits only it
    result = await chat.chat(request(WEATHER_Q, tools=TOOLS, tool_choice=named("get_time")))
    assert result.finish_reason == "tool_calls"
    assert [call.name for call in result.tool_calls] == ["get_time"]
    assert schema_errors(json.loads(result.tool_calls[0].arguments), TIME_PARAMS) == []


async def test_parallel_calls_allowed_only_when_asked(chat: LlamaCppChatProvider) -> None:
    calls = plan(request(WEATHER_Q, tools=TOOLS, tool_choice="required"))["schema"]["properties"][
        "tool_calls"
    ]
    assert calls["maxItems"] == 1
    req = request(WEATHER_Q, tools=TOOLS, tool_choice="required", parallel_tool_calls=True)
    assert "maxItems" not in plan(req)["schema"]["properties"]["tool_calls"]


async def test_tool_choice_none_answers_in_text(chat: LlamaCppChatProvider) -> None:
    req = request(WEATHER_Q, tools=TOOLS, tool_choice="none", max_tokens=30)
    assert plan(req) is None  # no grammar, no tool prompt: a plain chat
    result = await chat.chat(req)
    assert result.text.strip() and not result.tool_calls
    assert result.finish_reason in ("stop", "length")


async def test_auto_answers_with_text_or_calls_never_both(chat: LlamaCppChatProvider) -> None:
    for question in (WEATHER_Q, [{"role": "user", "content": "Hello! How are you?"}]):
        result = await chat.chat(request(question, tools=TOOLS, tool_choice="auto"))
        if result.tool_calls:
            assert result.finish_reason == "tool_calls" and result.text == ""
            for call in result.tool_calls:
                assert schema_errors(json.loads(call.arguments), PARAMS[call.name]) == []
        else:
            assert result.finish_reason == "stop" and result.text.strip()


async def test_streamed_tool_calls_concatenate_to_valid_arguments(chat: LlamaCppChatProvider) -> None:
    chunks = await collect(chat, request(WEATHER_Q, tools=TOOLS, tool_choice="required"))
    pieces = [piece for chunk in chunks for piece in chunk.tool_calls]
    assert not any(chunk.delta for chunk in chunks)
    assert len(pieces) >= 2  # the arguments arrive in fragments
    head, rest = pieces[0], pieces[1:]
    assert head.index == 0 and head.id and head.id.startswith("call_") and head.name in PARAMS
    assert all(p.index == 0 and p.id is None and p.name is None for p in rest)  # id and name once only
    arguments = "".join(p.arguments for p in pieces)
    assert schema_errors(json.loads(arguments), PARAMS[head.name]) == []
    last = chunks[-1]
    assert last.finish_reason == "tool_calls" and last.usage is not None and last.usage.completion_tokens > 5


async def test_streamed_text_answer_with_tools_matches_plain(chat: LlamaCppChatProvider) -> None:
    req = request([{"role": "user", "content": "Hello! How are you?"}], tools=TOOLS, tool_choice="auto")
    plain = await chat.chat(req)
    chunks = await collect(chat, req)
    if plain.tool_calls:  # greedy decoding makes the same choice both times
        assert [p.name for c in chunks for p in c.tool_calls if p.name] == [c.name for c in plain.tool_calls]
    else:
        assert "".join(c.delta for c in chunks) == plain.text
        assert not any(c.tool_calls for c in chunks)
    assert chunks[-1].finish_reason == plain.finish_reason


async def test_tools_with_a_response_format_answer_in_that_format(chat: LlamaCppChatProvider) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}
    result = await chat.chat(request(PERSON_Q, tools=TOOLS, tool_choice="auto", response_format=fmt))
    if not result.tool_calls:
        assert schema_errors(json.loads(result.text), PERSON) == []


async def test_a_second_round_with_a_tool_result_renders_and_runs(chat: LlamaCppChatProvider) -> None:
    rendered = _plain_messages(ROUND_TWO)
    assert [m["role"] for m in rendered] == ["user", "assistant", "user"]
    assert rendered[1]["content"] == 'I called get_weather with {"city": "Paris", "unit": "c"}.'
    assert rendered[2]["content"].startswith("Tool result (get_weather): ")
    for choice in ("auto", "none"):
        result = await chat.chat(request(ROUND_TWO, tools=TOOLS, tool_choice=choice, max_tokens=60))
        assert result.text.strip() or result.tool_calls
    follow_up = await chat.chat(request(ROUND_TWO, tools=TOOLS, tool_choice="none", max_tokens=60))
    assert not follow_up.tool_calls and "tool_calls" not in follow_up.text


def address_tool(name: str, field: str) -> dict[str, Any]:
    """A pydantic-style tool: its argument refers to a ``$defs`` entry named ``Address``."""
    address = {
        "type": "object",
        "properties": {"city": {"type": "string"}, field: {"type": "string"}},
        "required": ["city", field],
        "additionalProperties": False,
    }
    parameters = {
        "$defs": {"Address": address},
        "type": "object",
        "properties": {"to": {"$ref": "#/$defs/Address"}},
        "required": ["to"],
        "additionalProperties": False,
    }
    return {"type": "function", "function": {"name": name, "parameters": parameters}}


async def test_tools_with_refs_keep_their_own_definitions(chat: LlamaCppChatProvider) -> None:
    # two tools both define "Address", differently; a third refers to itself recursively
    tree = {
        "type": "object",
        "properties": {
            "label": {"type": "string"},
            "children": {"type": "array", "items": {"$ref": "#"}, "maxItems": 2},
        },
        "required": ["label"],
        "additionalProperties": False,
    }
    tools = [
        address_tool("ship", "zip"),
        address_tool("post", "country"),
        {"type": "function", "function": {"name": "tree", "parameters": tree}},
    ]
    asks = {
        "ship": "Send the parcel to Anna in Berlin.",
        "post": "Send the parcel to Anna in Berlin.",
        # a vaguer request sends the 135M model into nesting children until max_tokens
        "tree": "Make a tree with a root labelled 'a' and one child labelled 'b'.",
    }
    for tool in tools:
        name = tool["function"]["name"]
        ask = [{"role": "user", "content": asks[name]}]
        result = await chat.chat(request(ask, tools=tools, tool_choice=named(name), max_tokens=120))
        assert [call.name for call in result.tool_calls] == [name]
        parameters = tool["function"]["parameters"]
        assert schema_errors(json.loads(result.tool_calls[0].arguments), parameters) == []


def test_grammar_strings_exclude_raw_control_characters() -> None:
    """JSON forbids a raw newline inside a string; llama.cpp's converter allows one, so the
    grammar is repaired (this fails if a new llama-cpp-python changes the rule's text)."""
    from providers.local.llama_structured import grammar_text

    rules = dict(line.split(" ::= ", 1) for line in grammar_text({"type": "object"}).splitlines())
    plain = rules["char"].split(" | ")[0]  # the characters allowed unescaped
    assert plain.startswith("[^") and r"\x00-\x1F" in plain


# --------------------------------------------------------------------------- failures


async def test_max_tokens_too_small_is_a_clear_error(chat: LlamaCppChatProvider) -> None:
    cases = [
        request(WEATHER_Q, tools=TOOLS, tool_choice="required", max_tokens=5),
        request(
            PERSON_Q,
            response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": PERSON}},
            max_tokens=5,
        ),
    ]
    for req in cases:
        with pytest.raises(ProviderError) as err:
            await chat.chat(req)
        assert err.value.kind is ErrorKind.UNAVAILABLE and err.value.code == "IncompleteStructuredOutput"
        assert "max_tokens" in err.value.message
        seen: list[ChatChunk] = []
        with pytest.raises(ProviderError) as err:
            async for chunk in chat.chat_stream(req):
                seen.append(chunk)
        assert err.value.code == "IncompleteStructuredOutput"
        assert not any(c.finish_reason for c in seen)  # the stream never looks complete
        assert not any(c.tool_calls for c in seen)  # and a cut call is never sent


@pytest.mark.parametrize(
    ("schema", "words"),
    [
        (
            {"type": "object", "properties": {"code": {"type": "string", "pattern": "[a-z]+"}}},
            "properties.code.pattern",
        ),
        ({"type": "object", "properties": {"x": {"$ref": "https://example.com/x.json"}}}, "only local $ref"),
        ({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a", "b"]}, "'b'"),
        ({"type": "object", "properties": {"a": {"type": "date"}}}, "unsupported type"),
    ],
)
async def test_schemas_the_grammar_cannot_express_are_bad_requests(
    chat: LlamaCppChatProvider, schema: dict[str, Any], words: str
) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    tool = {"type": "function", "function": {"name": "f", "parameters": schema}}
    for req in (
        request(PERSON_Q, response_format=fmt),
        request(PERSON_Q, tools=[tool], tool_choice="required"),
    ):
        with pytest.raises(ProviderError) as err:
            await chat.chat(req)
        assert err.value.kind is ErrorKind.BAD_REQUEST and err.value.code == "UnsupportedSchema"
        assert words in err.value.message


async def test_capabilities_and_images(chat: LlamaCppChatProvider) -> None:
    assert chat.capabilities("smollm2") == {
        "tools": True,
        "json_object": True,
        "json_schema": True,
        "vision": False,
    }
    image = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}]
    with pytest.raises(ProviderError) as err:
        await chat.chat(request(image, tools=TOOLS))
    assert err.value.kind is ErrorKind.BAD_REQUEST and "image_url" in err.value.message
