"""/v1/chat/completions over scripted providers: response shapes, SSE framing, parameter mapping."""

from __future__ import annotations

import httpx
import orjson

from tests.gateway import fake_providers
from tests.gateway.fake_providers import FakeGateway

# shared fixtures (a gateway over scripted providers, and an httpx client for it)
client = fake_providers.client
fake_gateway = fake_providers.fake_gateway

USER = [{"role": "user", "content": "hello there"}]


def sse_events(text: str) -> list[str]:
    """The data payloads of an SSE body, checking each event is one ``data:`` line plus a blank line."""
    assert text.endswith("\n\n"), text[-50:]
    events = []
    for block in text.split("\n\n")[:-1]:
        assert block.startswith("data: "), block
        assert "\n" not in block, block
        events.append(block.removeprefix("data: "))
    return events


def test_plain_completion_shape(client: httpx.Client) -> None:
    r = client.post("/v1/chat/completions", json={"model": "default", "messages": USER})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["id"].startswith("chatcmpl-") and len(body["id"]) > 12
    assert body["object"] == "chat.completion"
    assert isinstance(body["created"], int)
    assert body["model"] == "default"  # what the client asked, not the backend name
    assert body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "echo: hello there", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    assert body["usage"] == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}


def test_parameters_reach_the_provider(client: httpx.Client, fake_gateway: FakeGateway) -> None:
    chat = fake_gateway.provider("chat")
    chat.calls.clear()
    payload = {
        "model": "qwen-plus",
        "messages": [
            {"role": "developer", "content": "be brief"},
            {
                "role": "user",
                "content": [{"type": "text", "text": "part one "}, {"type": "text", "text": "two"}],
            },
        ],
        "max_completion_tokens": 50,
        "temperature": 0.3,
        "top_p": 0.9,
        "seed": 42,
        "stop": "END",
        "presence_penalty": 0.5,
        "user": "u-1",
    }
    r = client.post("/v1/chat/completions", json=payload)
    assert r.status_code == 200, r.text
    sent = chat.calls[-1]
    assert sent.model == "qwen-plus"
    assert sent.messages == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "part one two"},
    ]
    assert (sent.max_tokens, sent.temperature, sent.top_p, sent.seed) == (50, 0.3, 0.9, 42)
    assert sent.stop == ["END"]
    assert sent.extra == {"presence_penalty": 0.5}


def test_max_tokens_is_used_when_max_completion_tokens_absent(
    client: httpx.Client, fake_gateway: FakeGateway
) -> None:
    chat = fake_gateway.provider("chat")
    r = client.post(
        "/v1/chat/completions",
        json={"model": "default", "messages": USER, "max_tokens": 9, "stop": ["a", "b"]},
    )
    assert r.status_code == 200
    assert chat.calls[-1].max_tokens == 9
    assert chat.calls[-1].stop == ["a", "b"]


def test_stream_with_usage(client: httpx.Client) -> None:
    payload = {
        "model": "default",
        "messages": USER,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    r = client.post("/v1/chat/completions", json=payload)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    assert events[-1] == "[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    ids = {c["id"] for c in chunks}
    assert len(ids) == 1 and ids.pop().startswith("chatcmpl-")
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "default" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[1:-2])
    assert text == "echo: hello there"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-2]["choices"][0]["delta"] == {}
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 7, "completion_tokens": 4, "total_tokens": 11}
    assert all(c["usage"] is None for c in chunks[:-1])


def test_stream_without_usage_has_no_usage_chunk(client: httpx.Client) -> None:
    r = client.post("/v1/chat/completions", json={"model": "default", "messages": USER, "stream": True})
    events = sse_events(r.text)
    assert events[-1] == "[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    assert all(c["choices"] for c in chunks)
    assert all("usage" not in c for c in chunks)


def test_stream_broken_after_first_byte_ends_with_error_event_and_no_done(client: httpx.Client) -> None:
    payload = {"model": "default", "messages": [{"role": "user", "content": "go [break]"}], "stream": True}
    r = client.post("/v1/chat/completions", json=payload)
    assert r.status_code == 200  # the status line left before the failure
    events = sse_events(r.text)
    assert "[DONE]" not in events
    first = orjson.loads(events[1])
    assert first["choices"][0]["delta"]["content"] == "echo:"
    last = orjson.loads(events[-1])
    assert set(last) == {"error"}
    assert "interrupted" in last["error"]["message"]
    assert "connection reset by upstream" in last["error"]["message"]
    assert last["error"]["type"] == "upstream_error"
    # no finish chunk pretends the answer was complete
    assert not any('"finish_reason":"stop"' in e for e in events)


def test_stream_failing_before_first_byte_is_a_plain_http_error(client: httpx.Client) -> None:
    payload = {"model": "default", "messages": [{"role": "user", "content": "[down]"}], "stream": True}
    r = client.post("/v1/chat/completions", json=payload)
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/json"
    assert "upstream refused the request" in r.json()["error"]["message"]


def test_content_filter_is_400_content_filter(client: httpx.Client) -> None:
    for stream in (False, True):
        payload = {
            "model": "default",
            "messages": [{"role": "user", "content": "[filter]"}],
            "stream": stream,
        }
        r = client.post("/v1/chat/completions", json=payload)
        assert r.status_code == 400
        err = r.json()["error"]
        assert err["code"] == "content_filter"
        assert "inappropriate content" in err["message"]
