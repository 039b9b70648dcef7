"""Model hot swap and rollback under load: no failed request, the new model answers afterwards."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

ADMIN_KEY = "adm-test-secret-0123"
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}


@dataclass
class Outcome:
    started: float
    finished: float
    status: int
    provider: str


def _load(
    url: str, total: int, clients: int, body: dict[str, Any], trigger_after: int, action: Callable[[], float]
) -> tuple[list[Outcome], float, float]:
    """``total`` chat requests from ``clients`` threads; ``action()`` runs after ``trigger_after`` finished.

    Returns every outcome, when ``action`` started and the time it reported as its end.
    """
    done = threading.Semaphore(0)
    outcomes: list[Outcome] = []
    local = threading.local()

    def one(_: int) -> None:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = httpx.Client(base_url=url, timeout=60)
        started = time.monotonic()
        try:
            r = client.post("/v1/chat/completions", json=body)
            outcomes.append(
                Outcome(started, time.monotonic(), r.status_code, r.headers.get("x-talkgate-provider", ""))
            )
        except httpx.HTTPError as exc:
            outcomes.append(Outcome(started, time.monotonic(), 0, repr(exc)))
        finally:
            done.release()

    with ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(one, i) for i in range(total)]
        for _ in range(trigger_after):
            done.acquire()
        action_started = time.monotonic()
        finished_at = action()
        for f in futures:
            f.result()
    return outcomes, action_started, finished_at


def _wait(admin: httpx.Client, capability: str, swap_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = admin.get(f"/admin/models/{capability}/swaps/{swap_id}").json()
        if record["status"] in ("done", "failed"):
            return record
        time.sleep(0.02)
    raise AssertionError(f"swap {swap_id} did not finish in {timeout}s")


CHAT = {"model": "default", "messages": [{"role": "user", "content": "Say something short."}]}


def _in_flight(outcomes: list[Outcome], at: float) -> list[Outcome]:
    return [o for o in outcomes if o.started < at < o.finished]


@pytest.fixture
def slow_upstream(sim: Any) -> Any:
    """~150 ms per completion (100 ms to the first token, 10 ms per token after it), so that
    the 16 clients really have requests in flight while a swap or rollback happens."""
    sim.control("PUT", "/sim/config", json={"ttft_ms": 100, "token_delay_ms": 10}).raise_for_status()
    yield sim
    sim.control("DELETE", "/sim/config").raise_for_status()


def test_route_swap_and_rollback_under_load(
    gateway_settings: Any, run_gateway: Any, slow_upstream: Any
) -> None:
    settings = gateway_settings(admin_key=ADMIN_KEY, auth="none")
    gw = run_gateway(settings)
    admin = httpx.Client(base_url=gw.url, timeout=60, headers=ADMIN)

    def swap() -> float:
        r = admin.post("/admin/models/chat/swap", json={"route": ["bailian:qwen-turbo", "local:smollm2"]})
        assert r.status_code == 202, r.text
        record = _wait(admin, "chat", r.json()["id"])
        assert record["status"] == "done", record
        return time.monotonic()

    outcomes, asked_at, swapped_at = _load(gw.url, 200, 16, CHAT, trigger_after=40, action=swap)
    assert [o for o in outcomes if o.status != 200] == []
    # The other clients' requests were on the wire when the swap was asked for, and finished fine.
    assert len(_in_flight(outcomes, asked_at)) >= 8
    assert {o.provider for o in _in_flight(outcomes, asked_at)} <= {"bailian:qwen-plus", "bailian:qwen-turbo"}
    before = [o.provider for o in outcomes if o.finished < asked_at]
    after = [o.provider for o in outcomes if o.started > swapped_at]
    assert len(before) >= 40 and set(before) == {"bailian:qwen-plus"}
    assert len(after) >= 10 and set(after) == {"bailian:qwen-turbo"}

    status = admin.get("/admin/models/chat").json()
    assert status["route"] == ["bailian:qwen-turbo", "local:smollm2"]
    assert status["aliases"]["default"] == "qwen-turbo"
    assert status["history"][0]["who"] == "admin-key"
    # The old default model is still served to clients that name it.
    pinned = httpx.post(f"{gw.url}/v1/chat/completions", json={**CHAT, "model": "qwen-plus"}, timeout=30)
    assert pinned.status_code == 200 and pinned.headers["x-talkgate-provider"] == "bailian:qwen-plus"

    def rollback() -> float:
        started = time.monotonic()
        r = admin.post("/admin/models/chat/rollback")
        assert r.status_code == 202, r.text
        record = _wait(admin, "chat", r.json()["id"])
        assert record["status"] == "done" and record["kind"] == "rollback", record
        assert time.monotonic() - started < 5  # "within seconds"
        return time.monotonic()

    outcomes, asked_at, rolled_at = _load(gw.url, 200, 16, CHAT, trigger_after=40, action=rollback)
    assert [o for o in outcomes if o.status != 200] == []
    assert len(_in_flight(outcomes, asked_at)) >= 8
    assert {o.provider for o in outcomes if o.finished < asked_at} == {"bailian:qwen-turbo"}
    after = [o.provider for o in outcomes if o.started > rolled_at]
    assert len(after) >= 10 and set(after) == {"bailian:qwen-plus"}
    assert admin.get("/admin/models/chat").json()["route"][0] == "bailian:qwen-plus"

    # Every swap is in the audit file with who, when and what.
    audit = [json.loads(line) for line in (settings.data_dir / "model_swaps.jsonl").read_text().splitlines()]
    assert [(a["kind"], a["status"], a["who"]) for a in audit] == [
        ("swap", "done", "admin-key"),
        ("rollback", "done", "admin-key"),
    ]
    assert audit[0]["spec"]["route"] == ["bailian:qwen-turbo", "local:smollm2"]
    assert audit[0]["requested_at"] <= audit[0]["finished_at"]
    metrics = httpx.get(f"{gw.url}/metrics").text
    assert 'talkgate_model_swaps_total{capability="chat",kind="swap",status="done"} 1.0' in metrics


def test_swap_requests_are_validated_and_a_failed_probe_changes_nothing(
    gateway_settings: Any, run_gateway: Any, sim: Any
) -> None:
    gw = run_gateway(gateway_settings(admin_key=ADMIN_KEY, auth="none"))
    admin = httpx.Client(base_url=gw.url, timeout=30, headers=ADMIN)

    assert (
        httpx.post(f"{gw.url}/admin/models/chat/swap", json={"route": ["bailian:qwen-turbo"]}).status_code
        == 401
    )
    for body in ({}, {"route": ["no-colon"]}, {"provider": "local"}, {"route": ["nobody:model"]}):
        r = admin.post("/admin/models/chat/swap", json=body)
        assert r.status_code == 400 and r.json()["error"]["message"], (body, r.text)
    assert admin.post("/admin/models/video/swap", json={"route": ["bailian:x"]}).status_code == 404
    r = admin.post("/admin/models/chat/swap", json={"provider": "bailian", "model": "qwen-plus"})
    assert r.status_code == 202  # accepted, then refused: a cloud provider has no model files
    assert _wait(admin, "chat", r.json()["id"])["status"] == "failed"
    assert admin.post("/admin/models/chat/rollback").status_code == 409  # nothing to go back to

    # A probe that fails (the simulator does not know this model) leaves the route as it was.
    r = admin.post("/admin/models/chat/swap?wait=true", json={"route": ["bailian:no-such-model"]})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "failed" and r.json()["error"]
    ok = httpx.post(f"{gw.url}/v1/chat/completions", json=CHAT, timeout=30)
    assert ok.status_code == 200 and ok.headers["x-talkgate-provider"] == "bailian:qwen-plus"
    assert admin.get("/admin/models/chat").json()["route"][0] == "bailian:qwen-plus"


@pytest.mark.slow
def test_local_model_swap_drains_and_rolls_back(gateway_settings: Any, run_gateway: Any) -> None:
    """A new llama.cpp instance with changed settings replaces the old one while requests run."""
    settings = gateway_settings(dashscope_api_key=None, admin_key=ADMIN_KEY, auth="none")
    gw = run_gateway(settings)
    admin = httpx.Client(base_url=gw.url, timeout=120, headers=ADMIN)
    body = {**CHAT, "model": "smollm2", "max_tokens": 8}
    services = gw.server.config.app.state.services
    original = services.registry.get("chat", "local")

    def swap() -> float:
        r = admin.post(
            "/admin/models/chat/swap", json={"provider": "local", "model": "smollm2", "n_ctx": 1024}
        )
        assert r.status_code == 202, r.text
        record = _wait(admin, "chat", r.json()["id"], timeout=120)
        assert record["status"] == "done" and record["drained"] is True, record
        return time.monotonic()

    outcomes, _, _ = _load(gw.url, 24, 4, body, trigger_after=4, action=swap)
    assert [o for o in outcomes if o.status != 200] == []
    assert all(o.provider == "local:smollm2" for o in outcomes)
    current = services.registry.get("chat", "local")
    assert current is not original and current.inner.config("smollm2").n_ctx == 1024
    assert original.inner.is_loaded("smollm2") is False  # drained, then unloaded
    assert services.settings.local.llm["smollm2"].n_ctx == 1024

    r = admin.post("/admin/models/chat/rollback?wait=true")
    assert r.status_code == 200 and r.json()["status"] == "done", r.text
    assert services.registry.get("chat", "local") is original
    assert services.settings.local.llm["smollm2"].n_ctx == 2048
    ok = httpx.post(f"{gw.url}/v1/chat/completions", json=body, timeout=120)
    assert ok.status_code == 200 and ok.headers["x-talkgate-provider"] == "local:smollm2"


def test_speech_routes_swap_with_a_real_probe(gateway_settings: Any, run_gateway: Any, sim: Any) -> None:
    """ASR and TTS re-points probe the new first target through the simulator before switching."""
    gw = run_gateway(gateway_settings(admin_key=ADMIN_KEY, auth="none"))
    admin = httpx.Client(base_url=gw.url, timeout=60, headers={"authorization": f"Bearer {ADMIN_KEY}"})
    for capability, route in (
        ("tts", ["bailian:qwen-tts", "local:piper-joe"]),
        ("asr", ["bailian:qwen3-asr-flash", "local:whisper-tiny.en"]),
    ):
        sim.clear_requests()
        r = admin.post(f"/admin/models/{capability}/swap?wait=true", json={"route": route})
        assert r.status_code == 200 and r.json()["status"] == "done", r.text
        assert sim.requests(), f"the {capability} probe never reached the simulator"
        assert admin.get(f"/admin/models/{capability}").json()["route"] == route
    speech = httpx.post(
        f"{gw.url}/v1/audio/speech", json={"model": "tts-1", "input": "Hello.", "voice": "alloy"}, timeout=60
    )
    assert speech.status_code == 200 and speech.headers["x-talkgate-provider"] == "bailian:qwen-tts"
