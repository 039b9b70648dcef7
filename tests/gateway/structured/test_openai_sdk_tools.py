"""Tools, structured output and images end to end with the official ``openai`` SDK:
SDK → gateway (real uvicorn) → Bailian simulator, and the local model when the cloud fails."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest
from PIL import Image
from pydantic import BaseModel

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
            },
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
TICKET = {
    "type": "function",
    "function": {
        "name": "open_ticket",
        "description": "Open a support ticket for a broken product",
        "parameters": {
            "type": "object",
            "properties": {"summary": {"type": "string"}},
            "required": ["summary"],
        },
    },
}
ASK = [{"role": "user", "content": "What is the weather in city Hangzhou?"}]


class Order(BaseModel):
    order_id: str
    items: int
    express: bool


@pytest.fixture
def sdk(gateway_settings: Callable[..., Any], run_gateway: Callable[..., Any]) -> openai.OpenAI:
    server = run_gateway(gateway_settings())
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60)


def test_two_round_trips_plain(sdk: openai.OpenAI) -> None:
    first = sdk.chat.completions.create(model="qwen-plus", messages=ASK, tools=[WEATHER, TICKET])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls
    assert call.function.name == "get_weather" and call.id.startswith("call_")
    assert json.loads(call.function.arguments)["city"]
    messages = [
        *ASK,
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 24 degrees"},
    ]
    second = sdk.chat.completions.create(model="qwen-plus", messages=messages, tools=[WEATHER, TICKET])
    assert second.choices[0].finish_reason == "stop"
    assert "Sunny, 24 degrees" in second.choices[0].message.content


def test_streamed_calls_assemble_in_the_sdk_helper(sdk: openai.OpenAI) -> None:
    with sdk.chat.completions.stream(
        model="qwen-plus",
        messages=[{"role": "user", "content": "Weather in Paris, and open a ticket: my kettle is broken"}],
        tools=[WEATHER, TICKET],
        parallel_tool_calls=True,
    ) as stream:
        final = stream.get_final_completion()
    calls = final.choices[0].message.tool_calls
    assert final.choices[0].finish_reason == "tool_calls"
    assert [c.function.name for c in calls] == ["get_weather", "open_ticket"]
    for c in calls:
        json.loads(c.function.arguments)  # every fragment arrived, in order


def test_required_and_named_tool_choice(sdk: openai.OpenAI) -> None:
    chat = [{"role": "user", "content": "Hello there"}]  # matches no tool
    required = sdk.chat.completions.create(
        model="qwen-plus", messages=chat, tools=[WEATHER, TICKET], tool_choice="required"
    )
    assert required.choices[0].message.tool_calls
    named = sdk.chat.completions.create(
        model="qwen-plus",
        messages=ASK,
        tools=[WEATHER, TICKET],
        tool_choice={"type": "function", "function": {"name": "open_ticket"}},
    )
    assert [c.function.name for c in named.choices[0].message.tool_calls] == ["open_ticket"]


def test_parse_with_a_pydantic_model(
    gateway_settings: Callable[..., Any], run_gateway: Callable[..., Any]
) -> None:
    settings = gateway_settings(routes={"chat": {"extra_models": ["qwen-plus-latest"]}})
    server = run_gateway(settings)
    sdk = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60)
    completion = sdk.chat.completions.parse(
        model="qwen-plus-latest",  # enforces json_schema natively
        messages=[{"role": "user", "content": "Give me the order as JSON."}],
        response_format=Order,
    )
    order = completion.choices[0].message.parsed
    assert isinstance(order, Order)


def test_an_image_question(sdk: openai.OpenAI, gateway_settings: Any) -> None:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (220, 30, 30)).save(out, "PNG")
    url = "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()
    content = [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": url}},
    ]
    answer = sdk.chat.completions.create(model="qwen-vl-max", messages=[{"role": "user", "content": content}])
    text = answer.choices[0].message.content
    assert "64x48" in text and "red" in text
    with pytest.raises(openai.BadRequestError) as err:
        sdk.chat.completions.create(model="default", messages=[{"role": "user", "content": content}])
    assert err.value.body["code"] == "model_cannot_see"


def test_bad_images_are_refused(sdk: openai.OpenAI) -> None:
    from tests.gateway.inputs.test_images import png_bomb

    def ask(url: str) -> dict[str, Any]:
        content = [{"type": "text", "text": "what?"}, {"type": "image_url", "image_url": {"url": url}}]
        with pytest.raises(openai.BadRequestError) as err:
            sdk.chat.completions.create(model="qwen-vl-max", messages=[{"role": "user", "content": content}])
        return err.value.body

    assert (
        "too many pixels"
        in ask("data:image/png;base64," + base64.b64encode(png_bomb(20000)).decode())["message"]
    )
    assert (
        "could not be read"
        in ask("data:image/png;base64," + base64.b64encode(b"not an image").decode())["message"]
    )
    assert "not on vision.url_allow" in ask("http://example.com/cat.png")["message"]


def test_a_private_address_is_never_fetched(
    gateway_settings: Callable[..., Any], run_gateway: Callable[..., Any]
) -> None:
    server = run_gateway(gateway_settings(vision={"url_allow": ["127.0.0.1", "localhost"]}))
    content = [
        {"type": "text", "text": "what?"},
        {"type": "image_url", "image_url": {"url": f"{server.url}/healthz"}},
    ]
    r = httpx.post(
        f"{server.url}/v1/chat/completions",
        json={"model": "qwen-vl-max", "messages": [{"role": "user", "content": content}]},
    )
    assert r.status_code == 400 and "private address" in r.json()["error"]["message"]


@pytest.mark.slow
def test_when_the_cloud_fails_the_local_model_keeps_the_shape(
    gateway_settings: Callable[..., Any], run_gateway: Callable[..., Any], sim: Any
) -> None:
    sim.fault(service="generation", status=500)  # until cleared: every cloud attempt fails
    server = run_gateway(gateway_settings(retry={"attempts": 1}))
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120)
    raw = client.chat.completions.with_raw_response.create(
        model="qwen-plus", messages=ASK, tools=[WEATHER], tool_choice="required", max_tokens=96
    )
    assert raw.headers["x-talkgate-provider"] == "local:smollm2"
    [call] = raw.parse().choices[0].message.tool_calls
    assert call.function.name == "get_weather" and isinstance(
        json.loads(call.function.arguments)["city"], str
    )
    parsed = client.chat.completions.parse(
        model="qwen-plus",
        messages=[{"role": "user", "content": "An order as JSON"}],
        response_format=Order,
        max_tokens=96,
    )
    assert isinstance(parsed.choices[0].message.parsed, Order)


def test_tools_may_be_kept_off_local_models(
    gateway_settings: Callable[..., Any], run_gateway: Callable[..., Any], sim: Any
) -> None:
    sim.fault(service="generation", status=500)
    settings = gateway_settings(retry={"attempts": 1})
    settings.routes["chat"].local_tools = False
    server = run_gateway(settings)
    r = httpx.post(
        f"{server.url}/v1/chat/completions",
        json={"model": "qwen-plus", "messages": ASK, "tools": [WEATHER], "tool_choice": "required"},
        timeout=60,
    )
    assert r.status_code >= 500 and "may not fall back to local models" in r.json()["error"]["message"]


def test_a_schema_violation_is_retried_and_a_cut_tool_stream_never_reaches_the_client(
    gateway_settings: Callable[..., Any], run_gateway: Callable[..., Any], sim: Any
) -> None:
    server = run_gateway(gateway_settings())
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60)
    sim.fault(service="generation", invalid_output=True, times=1)  # the first answer breaks the schema
    raw = client.chat.completions.with_raw_response.create(
        model="qwen-plus", messages=ASK, tools=[WEATHER], tool_choice="required"
    )
    [call] = raw.parse().choices[0].message.tool_calls
    assert raw.headers["x-talkgate-provider"] == "bailian:qwen-plus"  # the retry on the same target passed
    assert "unit" not in json.loads(call.function.arguments) or json.loads(call.function.arguments)[
        "unit"
    ] in ("celsius", "fahrenheit")
    sim.clear_requests()
    sim.fault(service="generation", cut_after=2, times=1)  # cut in the middle of the streamed call
    with client.chat.completions.stream(model="qwen-plus", messages=ASK, tools=[WEATHER]) as stream:
        final = stream.get_final_completion()
    [call] = final.choices[0].message.tool_calls
    assert json.loads(call.function.arguments)["city"]  # complete: the cut attempt was retried
    assert len(sim.requests("generation")) == 2
