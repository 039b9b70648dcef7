"""Shared by the resilience tests: fast-timing settings, SDK and simulator helpers, a gateway factory."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import openai
import pytest

from tests.conftest import SimHandle
from tests.servers import ServerThread

USER = [{"role": "user", "content": "hello there"}]
CLOUD_CHAIN = ["bailian:qwen-plus", "bailian:qwen-turbo"]
LOCAL_CHAIN = ["bailian:qwen-plus", "local:smollm2"]
#: /admin is never open: the gateways fast() configures carry this admin key (with /v1 open).
ADMIN_KEY = "tg-admin-resilience-5d1e"
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}


def fast(chain: list[str] = CLOUD_CHAIN, **overrides: Any) -> dict[str, Any]:
    """Small timings so the suite stays fast; each test overrides what it exercises."""
    settings: dict[str, Any] = {
        "auth": "none",
        "admin_key": ADMIN_KEY,
        "cache": {"enabled": False},
        "retry": {"attempts": 3, "base_delay_s": 0.01, "max_delay_s": 0.05, "max_retry_after_s": 3.0},
        "breaker": {
            "window_s": 30.0,
            "min_calls": 100,
            "consecutive_failures": 3,
            "cooldown_s": 1.0,
            "max_cooldown_s": 4.0,
        },
        "deadlines": {"chat": 20.0, "asr": 20.0, "tts": 20.0, "first_byte": 1.0},
        "upstream_timeout_s": 1.0,
        "routes": {
            "chat": {"chain": chain, "aliases": {"default": "qwen-plus"}},
            "asr": {
                "chain": ["bailian:paraformer-realtime-v2", "local:whisper-tiny.en"],
                "aliases": {"whisper-1": "paraformer-realtime-v2"},
            },
            "tts": {
                "chain": ["bailian:cosyvoice-v2", "local:piper-joe"],
                "aliases": {"tts-1": "cosyvoice-v2"},
            },
        },
    }
    settings.update(overrides)
    return settings


def sdk(gw: ServerThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key="sk-unused", max_retries=0, timeout=30)


def chat(gw: ServerThread, **kw: Any) -> Any:
    """A plain completion through the SDK; returns the raw response (headers + parsed body)."""
    kw.setdefault("max_tokens", 8)
    return sdk(gw).chat.completions.with_raw_response.create(model="qwen-plus", messages=USER, **kw)


def upstream(sim: SimHandle, model: str | None = None) -> list[dict[str, Any]]:
    calls = sim.requests("generation")
    return [c for c in calls if model is None or c["model"] == model]


def services_of(gw: ServerThread) -> Any:
    return gw.server.config.app.state.services


def events_of(gw: ServerThread) -> list[tuple[str, dict[str, Any]]]:
    events: list[tuple[str, dict[str, Any]]] = []
    services_of(gw).router.listeners.append(lambda e, f: events.append((e, f)))
    return events


def sse(text: str) -> list[str]:
    return [b.removeprefix("data: ") for b in text.split("\n\n") if b.startswith("data: ")]


@pytest.fixture
def gateway(gateway_settings: Callable[..., Any], run_gateway: Callable[..., ServerThread]):
    def start(**overrides: Any) -> ServerThread:
        return run_gateway(gateway_settings(**overrides))

    return start
