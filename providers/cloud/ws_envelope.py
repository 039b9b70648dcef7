"""The inference WebSocket's JSON envelope (reference §4.1, §5.1), both directions.

Client → server: ``{"header": {"action", "task_id", "streaming"}, "payload": {...}}``.
Server → client: ``{"header": {"task_id", "event", "attributes"}, "payload": {...}}``; a
``task-failed`` header also carries ``error_code`` and ``error_message``. The cloud client
(``ws_task.py``) writes actions; the gateway's DashScope server side (``gateway/dashscope/``,
used by the front door and the simulator) writes events, so both agree on one definition.
"""

from __future__ import annotations

from typing import Any

import orjson

#: The client actions of a duplex task, in the order a task uses them.
ACTIONS = ("run-task", "continue-task", "finish-task")


def action_frame(action: str, task_id: str, payload: dict[str, Any], streaming: str = "duplex") -> bytes:
    header = {"action": action, "task_id": task_id, "streaming": streaming}
    return orjson.dumps({"header": header, "payload": payload})


def event_frame(task_id: str, event: str, payload: dict[str, Any], **attributes: Any) -> bytes:
    header = {"task_id": task_id, "event": event, "attributes": attributes}
    return orjson.dumps({"header": header, "payload": payload})


def failed_frame(task_id: str, code: str, message: str) -> bytes:
    header = {
        "task_id": task_id,
        "event": "task-failed",
        "error_code": code,
        "error_message": message,
        "attributes": {},
    }
    return orjson.dumps({"header": header, "payload": {}})
