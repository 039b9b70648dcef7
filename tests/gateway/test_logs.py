"""Structured JSON logs carry the request id of the request that produced them."""

from __future__ import annotations

import io
import json
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.logs import configure_logging
from gateway.settings import Settings


@pytest.fixture
def captured() -> Iterator[Any]:
    """configure_logging into a buffer; the root logger is restored afterwards."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    buffers: list[io.StringIO] = []

    def configure(settings: Settings) -> io.StringIO:
        buf = io.StringIO()
        configure_logging(settings, stream=buf)
        buffers.append(buf)
        return buf

    yield configure
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    logging.captureWarnings(False)


def _lines(buf: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buf.getvalue().splitlines() if line.strip()]


def test_json_lines_carry_the_request_id_of_the_request(tmp_path: Path, captured: Any) -> None:
    settings = Settings(
        data_dir=tmp_path, log_json=True, dashscope_api_key=None, admin_key="adm-logs-0123456789"
    )
    buf = captured(settings)
    with TestClient(create_app(settings), headers={"authorization": "Bearer adm-logs-0123456789"}) as client:
        r = client.post(
            "/admin/models/chat/swap",
            json={"route": ["local:smollm2"], "probe": False},
            headers={"x-request-id": "req-abc-123"},
        )
        assert r.status_code == 202, r.text
        assert r.headers["x-request-id"] == "req-abc-123"  # echoed
        deadline = time.monotonic() + 5
        while client.get(f"/admin/models/chat/swaps/{r.json()['id']}").json()["status"] != "done":
            assert time.monotonic() < deadline
            time.sleep(0.01)
    records = _lines(buf)
    swaps = [rec for rec in records if rec["logger"] == "talkgate.hotswap"]
    assert [s["message"] for s in swaps] == ["model swap requested", "model swap done"]
    gateway_ids = {rec["request_id"] for rec in swaps}
    assert len(gateway_ids) == 1 and re.fullmatch(r"[0-9a-f]{32}", gateway_ids.pop())
    for rec in swaps:
        # The background swap task inherits the admin request's ids (the gateway's own, which
        # also names the usage row, and the client's); the audit fields are top-level.
        assert rec["client_request_id"] == "req-abc-123"
        assert rec["level"] == "INFO" and rec["ts"].endswith("Z")
        assert rec["swap"]["who"] == "admin-key" and rec["swap"]["spec"]["route"] == ["local:smollm2"]


def test_outside_a_request_the_id_is_null_and_exceptions_are_kept(tmp_path: Path, captured: Any) -> None:
    buf = captured(Settings(data_dir=tmp_path, log_json=True, log_level="debug"))
    log = logging.getLogger("talkgate.test")
    log.debug("plain %s", "message", extra={"tenant": "acme"})
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("it failed")
    first, second = _lines(buf)
    assert first == {
        "ts": first["ts"],
        "level": "DEBUG",
        "logger": "talkgate.test",
        "message": "plain message",
        "request_id": None,
        "tenant": "acme",
    }
    assert second["level"] == "ERROR" and "ValueError: boom" in second["exc"]


def test_text_format_and_uvicorn_records_go_through_the_same_handler(tmp_path: Path, captured: Any) -> None:
    buf = captured(Settings(data_dir=tmp_path, log_json=False))
    logging.getLogger("uvicorn.error").warning("server says hi")
    line = buf.getvalue().strip()
    assert line.endswith("WARNING uvicorn.error [-] server says hi")
    # Configuring twice replaces our handler instead of doubling every line.
    buf2 = captured(Settings(data_dir=tmp_path, log_json=True))
    logging.getLogger("talkgate.test").warning("once")
    assert len(_lines(buf2)) == 1 and buf.getvalue().strip() == line
