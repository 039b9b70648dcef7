"""Function calling in realtime sessions: the Realtime protocol's tool shapes ⇄ chat's.

The Realtime protocol writes a tool flat (``{"type": "function", "name", "description",
"parameters"}``) and a call as a conversation item (``function_call`` with ``call_id``,
``name`` and JSON ``arguments``; the client answers with a ``function_call_output`` item).
Inside, tools are the chat shape the router and the answer checks already understand
(gateway/structured/), so the same validation, schema checks and fallback rules apply as on
``/v1/chat/completions``; the history sent to the LLM turns call items into an assistant
message with ``tool_calls`` and outputs into ``tool`` messages.
"""

from __future__ import annotations

from typing import Any

from gateway.errors import APIError
from gateway.realtime.events import BadEvent
from gateway.structured.requests import check_tool_choice, check_tools


def parse_tools(value: Any, event_id: str | None) -> list[dict[str, Any]]:
    """``session.tools`` (Realtime shape) → checked chat tools."""
    param = "session.tools"
    if not isinstance(value, list):
        raise BadEvent(f"'{param}' must be a list.", "invalid_value", param, event_id)
    nested = []
    for i, tool in enumerate(value):
        if not isinstance(tool, dict) or tool.get("type") != "function":
            raise BadEvent(
                f"'{param}[{i}]' must be a function tool.", "invalid_value", f"{param}[{i}]", event_id
            )
        function = {k: tool[k] for k in ("name", "description", "parameters") if k in tool}
        nested.append({"type": "function", "function": function})
    try:
        return check_tools(nested)
    except APIError as exc:
        raise BadEvent(exc.message, exc.code or "invalid_value", param, event_id) from None


def parse_tool_choice(value: Any, tools: list[dict[str, Any]], event_id: str | None) -> str | dict[str, Any]:
    """``auto`` | ``none`` | ``required`` | ``{"type": "function", "name": ...}`` → chat's shape."""
    choice = value
    if isinstance(value, dict) and value.get("type") == "function" and "name" in value:
        choice = {"type": "function", "function": {"name": value["name"]}}
    try:
        return check_tool_choice(choice, tools) or "auto"
    except APIError as exc:
        raise BadEvent(exc.message, exc.code or "invalid_value", "session.tool_choice", event_id) from None


def describe_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"type": "function", **t["function"]} for t in tools]


def describe_tool_choice(choice: str | dict[str, Any]) -> str | dict[str, Any]:
    if isinstance(choice, dict):
        return {"type": "function", "name": choice["function"]["name"]}
    return choice


def function_call_item(
    item_id: str, call_id: str, name: str, arguments: str, status: str = "completed"
) -> dict[str, Any]:
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }


def function_output_item(item_id: str, call_id: str, output: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "function_call_output",
        "status": "completed",
        "call_id": call_id,
        "output": output,
    }


def parse_call_output(item: dict[str, Any], known_calls: set[str], event_id: str | None) -> tuple[str, str]:
    """(call_id, output) of a client's ``function_call_output`` item."""
    call_id, output = item.get("call_id"), item.get("output")
    if not isinstance(call_id, str) or call_id not in known_calls:
        raise BadEvent(
            f"'item.call_id' names no function call of this conversation: '{str(call_id)[:64]}'.",
            "invalid_value",
            "item.call_id",
            event_id,
        )
    if not isinstance(output, str):
        raise BadEvent("'item.output' must be a string.", "invalid_value", "item.output", event_id)
    return call_id, output


def history(items: list[Any]) -> list[dict[str, Any]]:
    """The conversation's items as chat messages: runs of function_call items become one
    assistant message with ``tool_calls``, outputs become ``tool`` messages; calls whose output
    never came are left out (a chat model would refuse the dangling call)."""
    answered = {i.call_id for i in items if i.kind == "function_call_output"}
    messages: list[dict[str, Any]] = []
    for item in items:
        if item.kind == "function_call":
            if item.call_id not in answered:
                continue
            call = {
                "id": item.call_id,
                "type": "function",
                "function": {"name": item.name, "arguments": item.text},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and "tool_calls" in last:
                last["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif item.kind == "function_call_output":
            messages.append({"role": "tool", "tool_call_id": item.call_id, "content": item.text})
        elif item.text:
            messages.append({"role": item.role, "content": item.text})
    return messages
