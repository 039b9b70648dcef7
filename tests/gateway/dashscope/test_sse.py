"""The front door's per-stream event writer writes the same bytes as the generic native event."""

from __future__ import annotations

import pytest

from gateway.dashscope import bodies
from gateway.dashscope.sse import GenerationEvents, sse_event


@pytest.mark.parametrize(("fmt", "parts"), [("text", False), ("message", False), ("message", True)])
@pytest.mark.parametrize(
    "text", ["Hello", "", 'quote " backslash \\ newline \n tab \t', "中文 ✓ \x00 \u2028"]
)
def test_text_events_equal_the_generic_event(fmt: str, parts: bool, text: str) -> None:
    request_id = 'a1b2c3"d4'
    events = GenerationEvents(request_id, fmt, parts)
    for seq, (n_in, n_out) in enumerate([(12, 1), (12, 30), (0, 0), (123456, 7)], start=1):
        expected = sse_event(
            seq,
            {
                "output": bodies.generation_output(text, "null", fmt, parts=parts),
                "usage": bodies.generation_usage(n_in, n_out),
                "request_id": request_id,
            },
        )
        assert events.text(seq, text, n_in, n_out) == expected


def test_multimodal_content_is_a_list_of_text_items() -> None:
    output = bodies.generation_output("hi", "stop", "text", parts=True)
    assert output == {
        "choices": [{"finish_reason": "stop", "message": {"role": "assistant", "content": [{"text": "hi"}]}}]
    }
    calls = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    with_calls = bodies.generation_output("", "tool_calls", "message", calls, parts=True)
    assert with_calls["choices"][0]["message"]["content"] == []
