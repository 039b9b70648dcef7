"""The ``front`` fixture: a gateway with keys on, the official ``dashscope`` SDK pointed at it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dashscope
import httpx
import pytest

from tests.conftest import SimHandle
from tests.gateway.dashscope.front_support import ADMIN_KEY, ANSWER, QUESTION, TRANSCRIPT
from tests.gateway.resilience_support import fast
from tests.servers import ServerThread


@pytest.fixture
def front(
    gateway_settings: Callable[..., Any],
    run_gateway: Callable[..., ServerThread],
    sim: SimHandle,
    tmp_path: Path,
) -> Iterator[Callable[..., Any]]:
    """Starts a gateway with keys on (SQLite usage), points the SDK at it, returns (server, key)."""
    sim.control("PUT", "/sim/config", json={"answers": {QUESTION: ANSWER}, "asr_transcript": TRANSCRIPT})
    saved = (dashscope.base_http_api_url, dashscope.base_websocket_api_url, dashscope.api_key)

    def start(
        key_fields: dict[str, Any] | None = None,
        quotas: dict[str, float] | None = None,
        routes: dict[str, dict[str, Any]] | None = None,
        **overrides: Any,
    ) -> tuple[ServerThread, str]:
        settings = fast(
            ["bailian:qwen-plus", "local:smollm2"],
            auth="keys",
            admin_key=ADMIN_KEY,
            database_url=f"sqlite+aiosqlite:///{tmp_path / 'front.db'}",
            deadlines={"chat": 60.0, "asr": 60.0, "tts": 60.0, "first_byte": 15.0},
            retry={"attempts": 1},
        )
        settings["routes"]["asr"]["chains"] = {
            "qwen3-asr-flash": ["bailian:qwen3-asr-flash", "local:whisper-tiny.en"]
        }
        for capability, fields in (routes or {}).items():  # e.g. {"chat": {"extra_models": [...]}}
            settings["routes"][capability].update(fields)
        settings.update(overrides)
        server = run_gateway(gateway_settings(**settings))
        admin = {"authorization": f"Bearer {ADMIN_KEY}"}
        if quotas:
            tenant = {"id": "acme", "name": "Acme", "quotas": quotas}
            made = httpx.post(f"{server.url}/admin/tenants", json=tenant, headers=admin, timeout=30)
            assert made.status_code == 201, made.text
        body = {"tenant": "acme", "scopes": ["chat", "asr", "tts"], **(key_fields or {})}
        r = httpx.post(f"{server.url}/admin/keys", json=body, headers=admin, timeout=30)
        assert r.status_code == 201, r.text
        key = r.json()["key"]
        dashscope.base_http_api_url = f"{server.url}/api/v1"
        dashscope.base_websocket_api_url = f"ws://127.0.0.1:{server.port}/api-ws/v1/inference"
        dashscope.api_key = key
        return server, key

    try:
        yield start
    finally:
        dashscope.base_http_api_url, dashscope.base_websocket_api_url, dashscope.api_key = saved
        sim.control("DELETE", "/sim/config")
