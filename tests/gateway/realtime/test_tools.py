"""Function calling in a realtime session: the official SDK's realtime client offers a tool,
the model (the simulator's deterministic matcher) calls it, the client answers with a
``function_call_output``, and the next response speaks from the result."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from tests.conftest import SimHandle
from tests.gateway.realtime.test_realtime import _client, _until, server  # noqa: F401

ORDER_TOOL = {
    "type": "function",
    "name": "get_order_status",
    "description": "Look up the delivery status of a customer order",
    "parameters": {
        "type": "object",
        "properties": {"order_id": {"type": "string"}},
        "required": ["order_id"],
    },
}


def _ask(conn: Any, text: str) -> list[Any]:
    conn.conversation.item.create(
        item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    )
    _until(conn, "conversation.item.done")
    conn.response.create()
    return _until(conn, "response.done")


def test_a_tool_is_called_and_its_result_answered(server: Any, sim: SimHandle) -> None:  # noqa: F811
    with _client(server).realtime.connect(model="gpt-realtime") as conn:
        conn.recv()
        conn.session.update(
            session={"type": "realtime", "output_modalities": ["text"], "tools": [ORDER_TOOL]}
        )
        updated = conn.recv()
        assert updated.type == "session.updated"
        assert updated.session.tools[0].name == "get_order_status" and updated.session.tool_choice == "auto"

        events = _ask(conn, "What is the delivery status of my order?")
        types = [e.type for e in events]
        assert "response.function_call_arguments.done" in types and "error" not in types
        done = next(e for e in events if e.type == "response.function_call_arguments.done")
        assert done.name == "get_order_status"
        arguments = json.loads(done.arguments)
        assert isinstance(arguments["order_id"], str)  # checked against the tool's schema
        response = events[-1].response
        assert response.status == "completed"
        call = response.output[-1]
        assert call.type == "function_call" and call.call_id == done.call_id
        assert not any(e.type == "response.output_text.delta" for e in events)

        conn.conversation.item.create(
            item={"type": "function_call_output", "call_id": done.call_id, "output": '{"status": "shipped"}'}
        )
        added = _until(conn, "conversation.item.done")[-1]
        assert added.item.type == "function_call_output"
        sim.clear_requests()
        conn.response.create()
        answer = _until(conn, "response.done")
        assert answer[-1].response.status == "completed"
        assert any(e.type == "response.output_text.done" for e in answer)
        # The model saw its call and the result, in chat's shape.
        sent = sim.requests("generation")[-1]["body"]["input"]["messages"]
        assert any(m.get("tool_calls") for m in sent if m["role"] == "assistant")
        tool = next(m for m in sent if m["role"] == "tool")
        assert tool["tool_call_id"] == done.call_id and "shipped" in tool["content"]


def test_bad_tools_and_outputs_are_refused(server: Any) -> None:  # noqa: F811
    with _client(server).realtime.connect(model="gpt-realtime") as conn:
        conn.recv()
        conn.session.update(
            session={"type": "realtime", "tools": [{"type": "function", "name": "bad name!"}]}
        )
        error = conn.recv()
        assert error.type == "error" and error.error.param == "session.tools"
        conn.session.update(session={"type": "realtime", "tool_choice": {"type": "function", "name": "nope"}})
        assert conn.recv().error.param == "session.tool_choice"
        conn.conversation.item.create(
            item={"type": "function_call_output", "call_id": "call_x", "output": "{}"}
        )
        assert conn.recv().error.param == "item.call_id"


def test_a_filler_sentence_while_the_client_tool_runs(
    gateway_settings: Callable[..., Any], run_gateway: Callable[..., Any], sim: SimHandle
) -> None:
    gateway = run_gateway(gateway_settings(realtime={"tool_filler_after_s": 0.3}))
    with _client(gateway).realtime.connect(model="gpt-realtime") as conn:
        conn.recv()
        conn.session.update(session={"type": "realtime", "tools": [ORDER_TOOL]})
        conn.recv()
        events = _ask(conn, "What is the delivery status of my order?")
        done = next(e for e in events if e.type == "response.function_call_arguments.done")
        assert not any(e.type == "response.output_audio.delta" for e in events)  # nothing spoken for a call
        filler = _until(conn, "response.done")  # the tool is "still running": the filler is spoken
        assert filler[-1].response.metadata == {"talkgate_filler": "true"}
        said = next(e.transcript for e in filler if e.type == "response.output_audio_transcript.done")
        assert said == "One moment, please."
        assert any(e.type == "response.output_audio.delta" for e in filler)
        conn.conversation.item.create(
            item={"type": "function_call_output", "call_id": done.call_id, "output": '{"status": "shipped"}'}
        )
        _until(conn, "conversation.item.done")
        sim.clear_requests()
        conn.response.create()
        answer = _until(conn, "response.done")
        assert answer[-1].response.status == "completed" and answer[-1].response.metadata is None
        assert any(e.type == "response.output_audio.delta" for e in answer)  # the answer is spoken
        # The filler is not part of the conversation the model sees.
        sent = str(sim.requests("generation")[-1]["body"]["input"]["messages"])
        assert "One moment" not in sent
