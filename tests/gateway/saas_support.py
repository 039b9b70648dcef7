"""Fixtures for the SaaS tests: a gateway with auth on, over SQLite or PostgreSQL, and its admin client."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from gateway.db import create_engine

ADMIN_KEY = "tg-admin-test-7f3c2b9e1d4a"
CHAT = {"model": "qwen-plus", "messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'saas.db'}"
    return request.getfixturevalue("postgres_url")


@dataclass
class Gateway:
    server: Any
    settings: Any
    clients: list[httpx.Client] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def services(self) -> Any:
        return self.server.server.config.app.state.services

    def client(self, key: str | None = None, **headers: str) -> httpx.Client:
        h = dict(headers)
        if key:
            h["authorization"] = f"Bearer {key}"
        c = httpx.Client(base_url=self.url, headers=h, timeout=30)
        self.clients.append(c)
        return c

    @property
    def admin(self) -> httpx.Client:
        return self.client(ADMIN_KEY)

    def create_key(self, tenant: str = "acme", scopes: list[str] | None = None, **kw: Any) -> dict[str, Any]:
        body = {"tenant": tenant, "scopes": scopes or ["chat", "asr", "tts", "talk", "avatars"], **kw}
        r = self.admin.post("/admin/keys", json=body)
        assert r.status_code == 201, r.text
        return r.json()

    def close(self) -> None:
        for c in self.clients:
            c.close()


@pytest.fixture
def saas(
    gateway_settings: Callable[..., Any], run_gateway: Callable[..., Any], database_url: str
) -> Iterator[Callable[..., Gateway]]:
    """Starts gateways with TALKGATE_ADMIN_KEY set (so /v1 needs keys) on ``database_url``."""
    made: list[Gateway] = []

    def start(**overrides: Any) -> Gateway:
        base: dict[str, Any] = {"admin_key": ADMIN_KEY, "database_url": database_url}
        base.update(overrides)
        settings = gateway_settings(**base)
        gw = Gateway(run_gateway(settings), settings)
        made.append(gw)
        return gw

    yield start
    for gw in made:
        gw.close()


@pytest.fixture
def saas_redis_url(redis_url: str) -> Iterator[str]:
    """Like ``redis_url`` but on its own database (12, or ``TALKGATE_TEST_SAAS_REDIS_URL``), so a
    FLUSHDB of the main test database by another test process running at the same time cannot wipe
    limiter state mid-test. Two runs at once on one Redis each set both variables (README)."""
    import os

    import redis

    url = os.environ.get("TALKGATE_TEST_SAAS_REDIS_URL") or redis_url.rsplit("/", 1)[0] + "/12"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


def query(url: str, sql: str) -> list[Any]:
    """Rows of one SQL statement against ``url``, on a throw-away engine (what the gateway wrote)."""

    async def run() -> list[Any]:
        engine = create_engine(url)
        try:
            async with engine.connect() as conn:
                return list((await conn.execute(text(sql))).all())
        finally:
            await engine.dispose()

    return asyncio.run(run())
