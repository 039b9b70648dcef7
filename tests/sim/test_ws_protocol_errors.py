"""The inference WebSocket under malformed, oversized and out-of-order client frames.

Each case must end with a protocol-level answer (task-failed, then a close frame; Bailian closes
after task-failed), never a crash, a reset or a hang, and another connection with a task in
flight must finish normally afterwards. Raw websocket-client (the SDK's own transport), because
the SDKs never send such frames. The server is started with ``server_options()``, the uvicorn
settings ``talkgate sim`` uses, since the frame-size behaviour depends on them.
"""

from __future__ import annotations

import json
import struct
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import websocket

from gateway.dashscope.ws_task import MAX_TEXT_FRAME_CHARS
from gateway.sim.app import create_app, server_options
from gateway.sim.config import SimConfig
from gateway.sim.ws import WS_MAX_MESSAGE_BYTES
from tests.servers import ServerThread

KEY = "sk-ws-protocol"
OP_TEXT, OP_BINARY, OP_CLOSE = 0x1, 0x2, 0x8


@pytest.fixture(scope="module")
def ws_url() -> Iterator[str]:
    server = ServerThread(create_app(SimConfig(api_keys=[KEY])), **server_options()).start()
    yield f"ws://127.0.0.1:{server.port}/api-ws/v1/inference"
    server.stop()


def _connect(url: str) -> websocket.WebSocket:
    return websocket.create_connection(url, header=[f"Authorization: Bearer {KEY}"], timeout=10)


def _run_task(task_id: str, **payload_changes: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "model": "paraformer-realtime-v2",
        "parameters": {"sample_rate": 16000, "format": "pcm"},
        "input": {},
        "task": "asr",
        "task_group": "audio",
        "function": "recognition",
    }
    payload.update(payload_changes)
    return {"header": {"streaming": "duplex", "task_id": task_id, "action": "run-task"}, "payload": payload}


def _action(action: str, task_id: str) -> str:
    header = {"streaming": "duplex", "task_id": task_id, "action": action}
    return json.dumps({"header": header, "payload": {"input": {}}})


def _events_until_close(ws: websocket.WebSocket) -> tuple[list[dict[str, Any]], int | None, str]:
    """Every JSON event the server sends, then its close code and reason (code None: no close frame)."""
    events: list[dict[str, Any]] = []
    while True:
        try:
            opcode, data = ws.recv_data(control_frame=True)
        except websocket.WebSocketConnectionClosedException:
            return events, None, ""
        if opcode == OP_TEXT:
            events.append(json.loads(data))
        elif opcode == OP_CLOSE:
            code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else None
            return events, code, data[2:].decode()


def _failed_then_closed(ws: websocket.WebSocket, close_code: int = 1000) -> dict[str, Any]:
    """The header of the single task-failed the server sent before closing with ``close_code``."""
    events, code, _ = _events_until_close(ws)
    names = [e["header"]["event"] for e in events]
    assert names[-1:] == ["task-failed"], events
    assert code == close_code
    header = events[-1]["header"]
    assert header["error_code"] and header["error_message"]
    return header


def _started(ws: websocket.WebSocket, task_id: str) -> None:
    ws.send(json.dumps(_run_task(task_id)))
    header = json.loads(ws.recv())["header"]
    assert (header["event"], header["task_id"]) == ("task-started", task_id)


@pytest.fixture
def bystander(ws_url: str) -> Iterator[None]:
    """A task in flight on another connection: it must finish normally after each bad client."""
    ws = _connect(ws_url)
    task_id = uuid.uuid4().hex
    _started(ws, task_id)
    ws.send_binary(b"\x10\x00" * 1600)
    yield
    ws.send_binary(b"\x10\x00" * 1600)
    ws.send(_action("finish-task", task_id))
    events, _, _ = _events_until_close_or_finished(ws)
    assert events[-1]["header"]["event"] == "task-finished", events
    ws.close()


def _events_until_close_or_finished(ws: websocket.WebSocket) -> tuple[list[dict[str, Any]], int | None, str]:
    events: list[dict[str, Any]] = []
    while True:
        opcode, data = ws.recv_data(control_frame=True)
        if opcode == OP_CLOSE:
            return events, struct.unpack("!H", data[:2])[0], data[2:].decode()
        if opcode == OP_TEXT:
            events.append(json.loads(data))
            if events[-1]["header"]["event"] in ("task-finished", "task-failed"):
                return events, None, ""


def test_invalid_json_fails_and_closes(ws_url: str, bystander: None) -> None:
    ws = _connect(ws_url)
    ws.send("{not json")
    header = _failed_then_closed(ws)
    assert header["error_code"] == "InvalidParameter" and "JSON" in header["error_message"]


@pytest.mark.parametrize(
    "text",
    ['["run-task"]', '"run-task"', "42", '{"header": "run-task"}', '{"header": {"task_id": "x"}}', "{}"],
)
def test_json_without_header_action_fails(ws_url: str, text: str) -> None:
    ws = _connect(ws_url)
    ws.send(text)
    header = _failed_then_closed(ws)
    assert "header.action" in header["error_message"]


def test_unsupported_action_fails(ws_url: str) -> None:
    ws = _connect(ws_url)
    ws.send(_action("pause-task", "a" * 32))
    assert "Unsupported action 'pause-task'" in _failed_then_closed(ws)["error_message"]


def test_binary_frame_before_run_task_fails(ws_url: str, bystander: None) -> None:
    ws = _connect(ws_url)
    ws.send_binary(b"\x00\x01" * 1600)
    header = _failed_then_closed(ws)
    assert header["error_code"] == "InvalidParameter" and "without a running task" in header["error_message"]


@pytest.mark.parametrize("action", ["continue-task", "finish-task"])
def test_continue_or_finish_for_unknown_task_without_a_task(ws_url: str, action: str) -> None:
    ws = _connect(ws_url)
    ws.send(_action(action, "b" * 32))
    header = _failed_then_closed(ws)
    assert header["task_id"] == "b" * 32
    assert f"'{action}' received without a running task" in header["error_message"]


@pytest.mark.parametrize("action", ["continue-task", "finish-task"])
def test_continue_or_finish_for_another_task_id_is_refused(ws_url: str, action: str, bystander: None) -> None:
    """Before the fix the message was applied to whatever task was running, whatever its id."""
    ws = _connect(ws_url)
    _started(ws, "c" * 32)
    ws.send(_action(action, "d" * 32))
    header = _failed_then_closed(ws)
    assert header["task_id"] == "d" * 32
    assert "not the running task" in header["error_message"] and "c" * 32 in header["error_message"]


def test_actions_after_task_finished_need_a_new_run_task(ws_url: str) -> None:
    ws = _connect(ws_url)
    _started(ws, "e" * 32)
    ws.send(_action("finish-task", "e" * 32))
    events, _, _ = _events_until_close_or_finished(ws)
    assert events[-1]["header"]["event"] == "task-finished"
    ws.send(_action("continue-task", "e" * 32))
    assert "without a running task" in _failed_then_closed(ws)["error_message"]


def test_duplicate_run_task_while_running_fails(ws_url: str, bystander: None) -> None:
    ws = _connect(ws_url)
    _started(ws, "f" * 32)
    ws.send(json.dumps(_run_task("f" * 32)))
    header = _failed_then_closed(ws)
    assert header["task_id"] == "f" * 32 and "Duplicate task_id" in header["error_message"]


def test_run_task_reusing_a_finished_task_id_fails_but_a_new_id_works(ws_url: str) -> None:
    ws = _connect(ws_url)
    _started(ws, "1" * 32)
    ws.send(_action("finish-task", "1" * 32))
    assert _events_until_close_or_finished(ws)[0][-1]["header"]["event"] == "task-finished"
    _started(ws, "2" * 32)  # a new id on the same connection is fine (reference §4.1)
    ws.send(json.dumps(_run_task("1" * 32)))
    assert "Duplicate task_id" in _failed_then_closed(ws)["error_message"]


def test_run_task_with_a_new_id_while_running_replaces_the_task(ws_url: str) -> None:
    """Not an error (reference §5.1: a new run-task aborts the current one); the old id is dead."""
    ws = _connect(ws_url)
    _started(ws, "4" * 32)
    _started(ws, "5" * 32)
    ws.send(_action("finish-task", "4" * 32))
    assert "not the running task" in _failed_then_closed(ws)["error_message"]


def test_huge_text_frame_fails_with_close_1009(ws_url: str, bystander: None) -> None:
    ws = _connect(ws_url)
    _started(ws, "3" * 32)
    ws.send("x" * 20_000_000)  # 20 MB: under the transport limit, far over the text-frame limit
    events, code, reason = _events_until_close(ws)
    header = events[-1]["header"]
    assert (header["event"], header["error_code"], header["task_id"]) == (
        "task-failed",
        "BadRequest.TooLarge",
        "3" * 32,
    )
    assert str(MAX_TEXT_FRAME_CHARS) in header["error_message"]
    assert (code, reason) == (1009, "text frame too large")


def test_text_frame_just_over_the_limit_is_refused_and_at_the_limit_is_parsed(ws_url: str) -> None:
    ws = _connect(ws_url)
    ws.send("x" * (MAX_TEXT_FRAME_CHARS + 1))
    assert _failed_then_closed(ws, 1009)["error_code"] == "BadRequest.TooLarge"
    ws = _connect(ws_url)
    ws.send(" " * (MAX_TEXT_FRAME_CHARS - 2) + "{}")  # at the limit: parsed, so a JSON error
    assert "header.action" in _failed_then_closed(ws)["error_message"]


def test_frame_over_the_transport_limit_ends_only_that_connection(ws_url: str, bystander: None) -> None:
    """Above WS_MAX_MESSAGE_BYTES uvicorn cuts the connection itself (often seen as a reset): it
    must end promptly, and everything else keeps working."""
    ws = _connect(ws_url)
    errors: list[BaseException] = []

    def send() -> None:
        try:
            ws.send_binary(b"\0" * (WS_MAX_MESSAGE_BYTES + 1024))
        except (OSError, websocket.WebSocketException) as exc:
            errors.append(exc)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        _, code, _ = _events_until_close(ws)
    except OSError:  # reset before the close frame could be read
        code = None
    sender.join(10)
    assert not sender.is_alive(), "the oversized send hung"
    assert code in (None, 1009)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"header": {"action": "run-task", "streaming": "duplex"}}, "header.task_id is required"),
        ({"header": {"action": "run-task", "task_id": 12345}}, "header.task_id is required"),
        ({"header": {"action": "run-task", "task_id": "x" * 500}}, "header.task_id is required"),
        ({"payload": None}, "task_group"),
        ({"payload": "asr"}, "task_group"),
        ({"drop": "task_group"}, "task_group"),
        ({"drop": "task"}, "task_group"),
        ({"drop": "model"}, "payload.model is required"),
        ({"drop": "input"}, "task can not be null"),
        ({"set": {"parameters": {"format": "pcm", "sample_rate": "fast"}}}, "sample_rate"),
        ({"set": {"model": "not-a-speech-model"}}, "Model not exist"),
    ],
)
def test_run_task_with_missing_or_bad_fields_fails(
    ws_url: str, change: dict[str, Any], expected: str
) -> None:
    message = _run_task("9" * 32)
    if "header" in change:
        message["header"] = change["header"]
    if "payload" in change:
        message["payload"] = change["payload"]
    if "drop" in change:
        del message["payload"][change["drop"]]
    if "set" in change:
        message["payload"].update(change["set"])
    ws = _connect(ws_url)
    ws.send(json.dumps(message))
    header = _failed_then_closed(ws)
    assert expected in header["error_message"], header


@pytest.mark.parametrize(
    ("parameters", "expected"),
    [
        ({"voice": ["longxiaochun_v2"], "format": "pcm"}, "not a supported voice"),  # was a TypeError
        ({"voice": {"name": "x"}, "format": "pcm"}, "not a supported voice"),
        ({"format": "pcm"}, "parameters.voice is required"),
        # was an OverflowError in the encoder (traceback, close 1011)
        (
            {"voice": "longxiaochun_v2", "format": "opus", "sample_rate": 24000, "bit_rate": 10**30},
            "bit_rate",
        ),
    ],
)
def test_tts_run_task_with_bad_parameters_fails_cleanly(
    ws_url: str, parameters: dict[str, Any], expected: str
) -> None:
    ws = _connect(ws_url)
    ws.send(json.dumps(_run_task("8" * 32, model="cosyvoice-v2", task="tts", parameters=parameters)))
    header = _failed_then_closed(ws)
    assert header["error_code"] == "InvalidParameter" and expected in header["error_message"]


def test_binary_frame_to_a_tts_task_fails_the_task(ws_url: str, bystander: None) -> None:
    """Before the fix this raised out of the handler: a logged traceback and close 1011, no task-failed."""
    ws = _connect(ws_url)
    ws.send(
        json.dumps(
            _run_task(
                "7" * 32,
                model="cosyvoice-v2",
                task="tts",
                parameters={"voice": "longxiaochun_v2", "format": "pcm"},
            )
        )
    )
    assert json.loads(ws.recv())["header"]["event"] == "task-started"
    ws.send_binary(b"\0" * 320)
    header = _failed_then_closed(ws)
    assert header["task_id"] == "7" * 32 and "binary frames are not accepted" in header["error_message"]


def test_unexpected_handler_error_is_task_failed_and_close_1011(
    ws_url: str, bystander: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A simulator bug still reaches the client as a failing task, not a reset or a hang."""
    from gateway.sim import ws_asr

    async def broken(self: Any, data: bytes) -> None:
        raise RuntimeError("simulated bug")

    ws = _connect(ws_url)
    _started(ws, "6" * 32)
    monkeypatch.setattr(ws_asr.AsrTask, "on_audio", broken)
    ws.send_binary(b"\0" * 320)
    header = _failed_then_closed(ws, 1011)
    assert header["error_code"] == "InternalError"
