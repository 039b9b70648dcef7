"""A native crash in a local engine never takes the gateway down (issue 17).

A real ``talkgate serve`` process, offline, with local llama.cpp models whose worker processes
are made to crash by the fault drill (``TALKGATE_WORKER_FAULT``: a real segfault through
ctypes, ``os.abort()``, SIGKILL) or are SIGKILLed from outside, in the middle of plain and
streamed requests. The gateway must answer from the next chain entry or with a clear 5xx,
never hang or send a half-silent 200, keep serving, count the crashes, and leave no worker
behind when it stops.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.providers.local.workers.support import alive, children_of, wait_gone
from tests.servers import GatewayProcess

pytestmark = pytest.mark.slow

CONFIG = """
routes:
  chat:
    chain: ["local:crashy", "local:smollm2"]
    chains:
      late: ["local:late"]
      solo: ["local:solo"]
local:
  llm:
    smollm2: {n_ctx: 512}
    crashy: {n_ctx: 512}
    late: {n_ctx: 512}
    solo: {n_ctx: 512}
"""
FAULTS = [
    {"model": "crashy", "action": "segv"},  # every call, plain or streamed, before its first token
    {"model": "late", "action": "abort", "method": "stream", "after_items": 3},
    {"model": "solo", "action": "kill"},
]
HELLO = [{"role": "user", "content": "Say hello."}]
STORY = [{"role": "user", "content": "Tell me a long story about a cat who sails around the world."}]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    data = tmp_path_factory.mktemp("crashes")
    config = data / "talkgate.yaml"
    config.write_text(CONFIG)
    process = GatewayProcess(
        {
            "TALKGATE_DATA_DIR": str(data),
            "TALKGATE_CONFIG": str(config),
            "TALKGATE_LOG_JSON": "false",
            "TALKGATE_WORKER_FAULT": json.dumps(FAULTS),
        }
    ).start()
    yield process
    process.stop()


def chat(gateway: GatewayProcess, model: str, messages=HELLO, **extra) -> httpx.Response:
    body = {"model": model, "messages": messages, "max_tokens": 24, "temperature": 0, **extra}
    return httpx.post(f"{gateway.url}/v1/chat/completions", json=body, timeout=60)


def stream(gateway: GatewayProcess, model: str, messages=HELLO, max_tokens: int = 24) -> tuple[int, list]:
    """Status and the decoded SSE data events of a streamed chat."""
    body = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0, "stream": True}
    events: list = []
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json=body, timeout=60) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                data = line[6:]
                events.append(data if data == "[DONE]" else json.loads(data))
        return r.status_code, events


def metric(gateway: GatewayProcess, name: str, model: str) -> float:
    text = httpx.get(f"{gateway.url}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith(f"{name}{{") and f'model="{model}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def assert_alive(gateway: GatewayProcess) -> None:
    assert gateway.process.poll() is None, gateway.output()
    assert httpx.get(f"{gateway.url}/healthz", timeout=5).status_code == 200


def test_a_segfault_in_a_plain_request_falls_over_to_the_next_model(gateway: GatewayProcess) -> None:
    r = chat(gateway, "default")
    assert r.status_code == 200, r.text
    assert r.headers["x-talkgate-provider"] == "local:smollm2" and r.headers["x-talkgate-fallback"] == "1"
    assert r.json()["choices"][0]["message"]["content"].strip()
    assert_alive(gateway)
    assert metric(gateway, "talkgate_local_worker_crashes_total", "crashy") >= 1


def test_a_segfault_in_a_streamed_request_falls_over_before_the_first_byte(gateway: GatewayProcess) -> None:
    before = metric(gateway, "talkgate_local_worker_crashes_total", "crashy")
    status, events = stream(gateway, "default")
    assert status == 200
    assert events[-1] == "[DONE]" and not any("error" in e for e in events if isinstance(e, dict))
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1] if e["choices"])
    assert text.strip()
    assert_alive(gateway)
    assert metric(gateway, "talkgate_local_worker_crashes_total", "crashy") >= before + 1
    assert metric(gateway, "talkgate_local_worker_restarts_total", "crashy") >= 1


def test_an_abort_after_the_first_tokens_ends_the_stream_with_an_error_event(gateway: GatewayProcess) -> None:
    status, events = stream(gateway, "late", STORY, max_tokens=64)
    assert status == 200  # the head was sent with the first token
    contents = [
        e
        for e in events
        if isinstance(e, dict) and e.get("choices") and e["choices"][0]["delta"].get("content")
    ]
    assert len(contents) >= 1
    assert "[DONE]" not in events  # never a clean close
    error = events[-1]["error"]
    assert "SIGABRT" in error["message"] and error["type"]
    assert_alive(gateway)
    assert metric(gateway, "talkgate_local_worker_crashes_total", "late") >= 1


def test_a_killed_worker_with_no_fallback_is_a_clear_5xx(gateway: GatewayProcess) -> None:
    r = chat(gateway, "solo")
    assert 500 <= r.status_code < 600
    error = r.json()["error"]
    assert "SIGKILL" in error["message"] or "solo" in error["message"]
    assert_alive(gateway)
    assert chat(gateway, "smollm2").status_code == 200  # the next requests succeed


def test_sigkill_from_outside_in_the_middle_of_a_stream(gateway: GatewayProcess) -> None:
    assert chat(gateway, "smollm2").status_code == 200  # smollm2's worker is up
    body = {"model": "smollm2", "messages": STORY, "max_tokens": 400, "temperature": 0, "stream": True}
    before = set(children_of(gateway.process.pid))
    events: list = []
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json=body, timeout=60) as r:
        for line in r.iter_lines():
            if not line.startswith("data: "):
                continue
            data = line[6:]
            events.append(data if data == "[DONE]" else json.loads(data))
            if len(events) == 3:
                for pid in before:  # every worker: smollm2's is among them
                    os.kill(pid, signal.SIGKILL)
    assert "[DONE]" not in events and "error" in events[-1]
    assert "SIGKILL" in events[-1]["error"]["message"]
    assert_alive(gateway)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the restarted worker answers
        if chat(gateway, "smollm2").status_code == 200:
            break
        time.sleep(0.5)
    else:
        pytest.fail("smollm2 did not come back after its worker was killed")
    assert metric(gateway, "talkgate_local_worker_crashes_total", "smollm2") >= 1


def test_readyz_marks_a_model_that_keeps_crashing_unhealthy(gateway: GatewayProcess) -> None:
    deadline = time.monotonic() + 30
    while metric(gateway, "talkgate_local_worker_crashes_total", "solo") < 3:  # back-off: 0, then 0.5 s
        assert time.monotonic() < deadline
        assert chat(gateway, "solo").status_code == 503
        time.sleep(0.3)
    r = httpx.get(f"{gateway.url}/readyz", timeout=10)
    body = r.json()
    assert "unhealthy" in body["unhealthy"]["chat:local:solo"]
    assert "smollm2" not in " ".join(body["unhealthy"])
    assert r.status_code == 200 and body["providers"]["chat"] == ["local"]  # smollm2 still serves
    assert metric(gateway, "talkgate_local_worker_unhealthy", "solo") == 1
    assert metric(gateway, "talkgate_local_worker_unhealthy", "smollm2") == 0


def test_stopping_the_gateway_leaves_no_worker(tmp_path: Path) -> None:
    process = GatewayProcess({"TALKGATE_DATA_DIR": str(tmp_path), "TALKGATE_LOG_JSON": "false"}).start()
    try:
        assert chat(process, "default").status_code == 200
        speech = httpx.post(
            f"{process.url}/v1/audio/speech",
            json={"model": "tts-1", "voice": "alloy", "input": "Hi."},
            timeout=60,
        )
        assert speech.status_code == 200
        workers = children_of(process.process.pid)
        assert len(workers) >= 2 and all(alive(pid) for pid in workers)
    finally:
        process.stop()
    assert process.process.returncode is not None
    assert all(wait_gone(pid, 10) for pid in workers), "worker processes outlived the gateway"
