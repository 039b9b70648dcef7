"""Slow clients: unfinished headers time out, half-open connections are capped, a stalled body is a 408
(issue 18 item 4). Against a real ``talkgate serve`` process, over raw sockets."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import GatewayProcess

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    process = GatewayProcess(
        {
            "TALKGATE_DATA_DIR": str(tmp_path_factory.mktemp("slow")),
            "TALKGATE_LOG_JSON": "false",
            "TALKGATE_LIMITS__HEADER_TIMEOUT_S": "1",
            "TALKGATE_LIMITS__BODY_IDLE_TIMEOUT_S": "1",
            "TALKGATE_LIMITS__MAX_WAITING_CONNECTIONS": "8",
        }
    ).start()
    yield process
    process.stop()


def connect(gateway: GatewayProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
    return sock


def read_until_closed(sock: socket.socket, limit_s: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes; and how long that took."""
    start = time.monotonic()
    sock.settimeout(limit_s)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        pytest.fail(f"the server kept the connection open for {limit_s} s: {data[:200]!r}")
    return data, time.monotonic() - start


def test_unfinished_headers_get_408_and_a_closed_connection(gateway: GatewayProcess) -> None:
    sock = connect(gateway)
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Ty")
    data, seconds = read_until_closed(sock, 10)
    assert data.startswith(b"HTTP/1.1 408") and b"request_timeout" in data
    assert seconds < 1 + 5


def test_a_connection_that_sends_nothing_is_closed(gateway: GatewayProcess) -> None:
    sock = connect(gateway)
    data, seconds = read_until_closed(sock, 10)
    assert data.startswith(b"HTTP/1.1 408") and seconds < 6


def test_half_open_connections_are_capped(gateway: GatewayProcess) -> None:
    socks = [connect(gateway) for _ in range(20)]
    time.sleep(0.3)
    closed = 0
    for sock in socks:
        sock.settimeout(0.2)
        try:
            if sock.recv(1) == b"":
                closed += 1
        except TimeoutError:
            pass
        except ConnectionResetError:
            closed += 1
    assert closed >= 20 - 8  # beyond the cap of 8 waiting connections, new ones are closed at once
    for sock in socks:
        sock.close()
    time.sleep(1.5)
    sock = connect(gateway)  # once they are gone the server takes connections again
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data, _ = read_until_closed(sock, 10)
    assert data.startswith(b"HTTP/1.1 200")


def test_a_stalled_body_is_answered_408(gateway: GatewayProcess) -> None:
    sock = connect(gateway)
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100000\r\n\r\n{"
    )
    data, seconds = read_until_closed(sock, 15)
    assert data.startswith(b"HTTP/1.1 408") and b"stalled" in data
    assert seconds < 1 + 5


def test_a_slow_body_that_keeps_sending_is_not_cut(gateway: GatewayProcess, tmp_path: Path) -> None:
    body = b'{"model": "local", "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4}'
    sock = connect(gateway)
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    for i in range(0, len(body), 30):  # 3 pieces, 0.6 s apart: slower than the whole 1 s budget
        sock.sendall(body[i : i + 30])
        time.sleep(0.6)
    data, _ = read_until_closed(sock, 60)
    assert data.startswith(b"HTTP/1.1 200"), data[:300]
