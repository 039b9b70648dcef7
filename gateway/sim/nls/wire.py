"""NLS gateway envelope (reference nls-protocol.md §2.3, §3.3): events, TaskFailed, status texts.

Server events echo the client's ``task_id`` with a fresh ``message_id``, ``status`` 20000000 and
``status_text`` ``Gateway:SUCCESS:Success.``; ``TaskFailed`` carries ``namespace: "Default"``.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson

SUCCESS = 20000000
SUCCESS_TEXT = "Gateway:SUCCESS:Success."

#: NLS status codes used by the simulator, with the ``Gateway:<NAME>`` part of their status_text.
NAMES = {
    40000000: "CLIENT_ERROR",
    40000001: "ACCESS_DENIED",
    40000002: "MESSAGE_INVALID",
    40000003: "PARAMETER_INVALID",
    40000004: "IDLE_TIMEOUT",
    40000005: "TOO_MANY_REQUESTS",
    40000009: "INVALID_WAV_HEADER",
    40000010: "FREE_TRIAL_EXPIRED",
    40010001: "NAMESPACE_NOT_FOUND",
    40010003: "DIRECTIVE_INVALID",
    40010004: "CLIENT_DISCONNECT",
    40010005: "TASK_STATE_ERROR",
    40020105: "APPKEY_NOT_EXIST",
    40020106: "APPKEY_UID_MISMATCH",
    41010101: "UNSUPPORTED_SAMPLE_RATE",
    40270002: "NO_VALID_AUDIO_ERROR",
    40270003: "DECODE_ERROR",
    50000000: "SERVER_ERROR",
    50000001: "GRPC_ERROR",
    52010001: "GRPC_ERROR",
}
#: An injected fault's HTTP-style status -> the NLS status a task fails with.
FAULT_STATUS = {
    400: 40000003,
    401: 40000001,
    403: 40000001,
    408: 40000004,
    429: 40000005,
    500: 50000000,
    502: 50000001,
    503: 50000001,
    504: 52010001,
}


def status_text(status: int, message: str) -> str:
    prefix = "Meta" if status in (40020105, 40020106) else "Gateway"
    return f"{prefix}:{NAMES.get(status, 'ERROR')}:{message}"


def new_id() -> str:
    return uuid.uuid4().hex


def event(namespace: str, name: str, task_id: str, payload: dict[str, Any] | None = None) -> str:
    header = {
        "namespace": namespace,
        "name": name,
        "status": SUCCESS,
        "message_id": new_id(),
        "task_id": task_id,
        "status_text": SUCCESS_TEXT,
    }
    message: dict[str, Any] = {"header": header}
    if payload is not None:
        message["payload"] = payload
    return orjson.dumps(message).decode()


def task_failed(task_id: str, status: int, message: str) -> str:
    header = {
        "namespace": "Default",
        "name": "TaskFailed",
        "status": status,
        "message_id": new_id(),
        "task_id": task_id,
        "status_text": status_text(status, message),
    }
    return orjson.dumps({"header": header}).decode()


class NlsFailure(Exception):
    """Ends the task with TaskFailed ``status``/``message``, then the server closes the socket."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message
