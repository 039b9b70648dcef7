"""The simulator is open only on loopback: bind checks, the control token, unguessable audio URLs.

The refusals are checked through the real CLI in a subprocess on a free port with a wildcard
address: it must exit non-zero with the reason before binding anything (the port stays closed).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.sim.app import create_app
from gateway.sim.config import SimConfig
from gateway.sim.exposure import (
    CONTROL_TOKEN_ENV,
    MIN_CONTROL_TOKEN_CHARS,
    UnsafeExposure,
    check_exposure,
    exposure_problems,
    is_loopback,
)
from gateway.sim.state import AudioStore
from tests.servers import ServerThread, free_port

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "control-token-for-tests-0123456789"
KEYS_ENV = "TALKGATE_SIM_API_KEYS"


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_loopback_addresses(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "10.1.2.3", "192.168.0.10", "no-such-host.invalid"])
def test_non_loopback_addresses(host: str) -> None:
    assert not is_loopback(host)


def test_loopback_stays_open_without_keys_or_token() -> None:
    assert exposure_problems("127.0.0.1", SimConfig(api_keys=[]), None) == []


def test_non_loopback_needs_keys_and_token() -> None:
    both = exposure_problems("0.0.0.0", SimConfig(api_keys=[]), None)
    assert len(both) == 2
    assert KEYS_ENV in both[0] and CONTROL_TOKEN_ENV in both[1]
    assert exposure_problems("0.0.0.0", SimConfig(api_keys=["sk-a"]), TOKEN) == []
    (only_token,) = exposure_problems("10.0.0.5", SimConfig(api_keys=["sk-a"]), None)
    assert CONTROL_TOKEN_ENV in only_token and "/sim/requests" in only_token
    (only_keys,) = exposure_problems("10.0.0.5", SimConfig(api_keys=[]), TOKEN)
    assert KEYS_ENV in only_keys and "any non-empty API key" in only_keys


def test_short_control_token_is_refused_everywhere() -> None:
    short = "x" * (MIN_CONTROL_TOKEN_CHARS - 1)
    with pytest.raises(UnsafeExposure, match=str(MIN_CONTROL_TOKEN_CHARS)):
        check_exposure("127.0.0.1", SimConfig(api_keys=[]), short)


def _sim_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TALKGATE_", "DASHSCOPE_"))}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize(
    ("env", "named", "not_named"),
    [
        ({}, [KEYS_ENV, CONTROL_TOKEN_ENV], []),
        ({KEYS_ENV: "sk-a,sk-b"}, [CONTROL_TOKEN_ENV], [KEYS_ENV + " is unset"]),
        ({CONTROL_TOKEN_ENV: TOKEN}, [KEYS_ENV], [CONTROL_TOKEN_ENV + " is unset"]),
        ({KEYS_ENV: " , "}, [KEYS_ENV, CONTROL_TOKEN_ENV], []),  # blank entries are no keys
    ],
)
def test_cli_refuses_wildcard_bind_without_protection(
    env: dict[str, str], named: list[str], not_named: list[str]
) -> None:
    port = free_port()
    out = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "sim", "--host", "0.0.0.0", "--port", str(port)],
        env=_sim_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert out.returncode == 2, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    assert out.stderr.startswith("talkgate sim: refusing to serve on '0.0.0.0'"), out.stderr
    for name in named:
        assert name in out.stderr
    for text in not_named:
        assert text not in out.stderr
    assert "--host 127.0.0.1" in out.stderr
    assert not _port_open(port)


@pytest.fixture
def guarded_sim() -> Iterator[ServerThread]:
    server = ServerThread(create_app(SimConfig(api_keys=["sk-guarded"]), control_token=TOKEN)).start()
    yield server
    server.stop()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/sim/requests"),
        ("DELETE", "/sim/requests"),
        ("GET", "/sim/faults"),
        ("POST", "/sim/faults"),
        ("DELETE", "/sim/faults"),
        ("DELETE", "/sim/faults/1"),
        ("GET", "/sim/config"),
        ("PUT", "/sim/config"),
        ("DELETE", "/sim/config"),
    ],
)
def test_control_api_requires_the_token_when_set(guarded_sim: ServerThread, method: str, path: str) -> None:
    body = {"service": "tts", "status": 500} if method in ("POST", "PUT") else None
    if method == "PUT":
        body = {"ttft_ms": 1}
    with httpx.Client(base_url=guarded_sim.url, timeout=10) as client:
        for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": TOKEN}):
            r = client.request(method, path, json=body, headers=headers)
            assert r.status_code == 401, (headers, r.text)
            assert r.headers["www-authenticate"] == "Bearer"
            assert CONTROL_TOKEN_ENV in r.json()["error"]["message"]
        r = client.request(method, path, json=body, headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code in (200, 201, 404), r.text  # 404: DELETE of a fault that does not exist
        assert r.status_code != 404 or path == "/sim/faults/1"


def test_token_does_not_gate_the_simulated_cloud_or_health(guarded_sim: ServerThread) -> None:
    """The DashScope API keeps its own key check; health stays open for probes."""
    with httpx.Client(base_url=guarded_sim.url, timeout=10) as client:
        assert client.get("/sim/health").status_code == 200
        body = {"model": "qwen-plus", "input": {"prompt": "hi"}}
        path = "/api/v1/services/aigc/text-generation/generation"
        assert client.post(path, json=body, headers={"Authorization": "Bearer sk-guarded"}).status_code == 200
        r = client.post(path, json=body, headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 401 and r.json()["code"] == "InvalidApiKey"


def test_audio_names_are_random() -> None:
    store = AudioStore()
    names = [store.put(b"RIFF", "audio/wav", "wav") for _ in range(50)]
    assert len(set(names)) == 50
    stems = [n.removesuffix(".wav") for n in names]
    assert all(len(s) >= 24 for s in stems)
    assert len({s[:8] for s in stems}) > 40  # no shared time prefix, no counter


def test_cli_reads_the_control_token_from_the_environment() -> None:
    """End to end on loopback: the token set in the environment guards the control API."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "sim", "--host", "127.0.0.1", "--port", str(port)],
        env=_sim_env(**{CONTROL_TOKEN_ENV: TOKEN}),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            try:
                if httpx.get(f"{base}/sim/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "simulator did not start"
            time.sleep(0.1)
        assert httpx.get(f"{base}/sim/requests", timeout=5).status_code == 401
        ok = httpx.get(f"{base}/sim/requests", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
        assert ok.status_code == 200 and ok.json() == {"requests": []}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if proc.stderr:
            proc.stderr.close()


def test_cli_refuses_a_short_control_token_on_loopback() -> None:
    port = free_port()
    out = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "sim", "--host", "127.0.0.1", "--port", str(port)],
        env=_sim_env(**{CONTROL_TOKEN_ENV: "short"}),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"{CONTROL_TOKEN_ENV} must be at least {MIN_CONTROL_TOKEN_CHARS} characters" in out.stderr
    assert not _port_open(port)
