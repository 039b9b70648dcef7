"""Bad tools, tool choices, tool results and response formats are 400s naming their path."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

USER = [{"role": "user", "content": "What is the weather in Hangzhou?"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


@pytest.fixture
def client(run_gateway: Any, gateway_settings: Any) -> httpx.Client:
    gw = run_gateway(gateway_settings())
    with httpx.Client(base_url=gw.url, timeout=30) as c:
        yield c


def refused(client: httpx.Client, **extra: Any) -> dict[str, Any]:
    body = {"model": "qwen-plus", "messages": USER, **extra}
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 400, r.text
    return r.json()["error"]


def test_invalid_json_schema_in_tools_names_the_path(client: httpx.Client) -> None:
    bad = {
        "type": "function",
        "function": {"name": "f", "parameters": {"type": "object", "properties": {"x": {"type": "strnig"}}}},
    }
    err = refused(client, tools=[WEATHER, bad])
    assert (
        err["param"].startswith("tools[1].function.parameters.properties.x")
        and err["code"] == "invalid_schema"
    )
    err = refused(client, tools=[{"type": "function", "function": {"name": "has space"}}])
    assert err["param"] == "tools[0].function.name"
    err = refused(client, tools=[WEATHER, WEATHER])
    assert "used twice" in err["message"]


def test_tool_choice_must_name_an_offered_tool(client: httpx.Client) -> None:
    err = refused(client, tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "nope"}})
    assert err["param"] == "tool_choice.function.name" and "'nope'" in err["message"]
    assert refused(client, tool_choice="required")["param"] == "tool_choice"
    assert refused(client, tools=[WEATHER], tool_choice="sometimes")["param"] == "tool_choice"


def test_a_tool_result_must_answer_a_call(client: httpx.Client) -> None:
    messages = [*USER, {"role": "tool", "tool_call_id": "call_404", "content": "sunny"}]
    r = client.post(
        "/v1/chat/completions", json={"model": "qwen-plus", "messages": messages, "tools": [WEATHER]}
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages[1].tool_call_id"


def test_response_format_is_checked(client: httpx.Client) -> None:
    err = refused(
        client, response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": {"type": 3}}}
    )
    assert err["param"].startswith("response_format.json_schema.schema") and err["code"] == "invalid_schema"
    assert refused(client, response_format={"type": "yaml"})["param"] == "response_format"
    assert (
        refused(client, response_format={"type": "json_schema", "json_schema": {}})["param"]
        == "response_format.json_schema"
    )
