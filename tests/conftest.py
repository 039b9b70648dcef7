"""Shared fixtures: the Bailian simulator, gateways pointed at it, Redis and PostgreSQL."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.servers import GatewayProcess, ServerThread

SIM_KEY = "sk-test-talkgate"


class SimHandle:
    """A running simulator plus its control API (faults, recorded requests)."""

    def __init__(self, server: ServerThread) -> None:
        self.server = server
        self.url = server.url
        self.http_base = f"{server.url}/api/v1"
        self.ws_base = f"ws://127.0.0.1:{server.port}/api-ws/v1/inference"
        self.compat_base = f"{server.url}/compatible-mode/v1"
        self.api_key = SIM_KEY
        state = server.server.config.app.state  # the simulated NLS (gateway/sim/nls/)
        self.nls_port: int | None = getattr(state, "nls_port", None)
        self.nls = state.nls
        self._client = httpx.Client(base_url=server.url, timeout=10)

    def fault(self, **spec: Any) -> dict[str, Any]:
        r = self._client.post("/sim/faults", json=spec)
        r.raise_for_status()
        return r.json()

    def clear_faults(self) -> None:
        self._client.delete("/sim/faults").raise_for_status()

    def requests(self, service: str | None = None) -> list[dict[str, Any]]:
        r = self._client.get("/sim/requests")
        r.raise_for_status()
        items = r.json()["requests"]
        return [i for i in items if service is None or i.get("service") == service]

    def clear_requests(self) -> None:
        self._client.delete("/sim/requests").raise_for_status()

    def control(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return self._client.request(method, path, **kw)

    def close(self) -> None:
        self._client.close()

    def reset(self) -> None:
        self.clear_faults()
        self.clear_requests()


@pytest.fixture(scope="session")
def sim_server() -> Iterator[ServerThread]:
    from gateway.sim.app import create_app
    from gateway.sim.config import SimConfig
    from tests.nls_support import nls_sim_config

    app = create_app(SimConfig(api_keys=[SIM_KEY]), nls_port=0, nls_config=nls_sim_config())
    server = ServerThread(app).start()
    yield server
    server.stop()


@pytest.fixture
def sim(sim_server: ServerThread) -> Iterator[SimHandle]:
    handle = SimHandle(sim_server)
    handle.reset()
    yield handle
    handle.reset()
    handle.close()


@pytest.fixture
def gateway_settings(tmp_path: Path, sim: SimHandle) -> Callable[..., Any]:
    """Builds Settings pointed at the simulator, with a private data dir; kwargs override."""
    from gateway.settings import Settings

    def make(**overrides: Any) -> Settings:
        base: dict[str, Any] = {
            "dashscope_api_key": sim.api_key,
            "dashscope_http_base_url": sim.http_base,
            "dashscope_websocket_base_url": sim.ws_base,
            "data_dir": tmp_path / "data",
            "log_json": False,
        }
        base.update(overrides)
        return Settings(**base)

    return make


@pytest.fixture
def run_gateway() -> Iterator[Callable[..., ServerThread]]:
    """Starts real gateway servers (uvicorn threads) for given Settings; all stopped at teardown."""
    from gateway.app import create_app

    started: list[ServerThread] = []

    def start(settings: Any) -> ServerThread:
        server = ServerThread(create_app(settings)).start()
        started.append(server)
        return server

    yield start
    for s in started:
        s.stop()


@pytest.fixture
def gateway_process(tmp_path: Path, sim: SimHandle) -> Iterator[Callable[..., GatewayProcess]]:
    """Starts ``talkgate serve`` processes pointed at the simulator; all stopped at teardown.

    Each gets its own data dir; ``env`` adds or overrides variables (TALKGATE_REDIS_URL,
    TALKGATE_CONFIG, TALKGATE_ADMIN_KEY, TALKGATE_DATABASE_URL...).
    """
    started: list[GatewayProcess] = []

    def start(**env: str) -> GatewayProcess:
        base = {
            "DASHSCOPE_API_KEY": sim.api_key,
            "DASHSCOPE_HTTP_BASE_URL": sim.http_base,
            "DASHSCOPE_WEBSOCKET_BASE_URL": sim.ws_base,
            "TALKGATE_DATA_DIR": str(tmp_path / f"process-{len(started)}"),
            "TALKGATE_LOG_JSON": "false",
        }
        process = GatewayProcess({**base, **env})
        started.append(process)
        return process.start()

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def redis_url() -> Iterator[str]:
    """Real Redis, database 15, flushed around each test."""
    import redis

    url = os.environ.get("TALKGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    client = redis.Redis.from_url(url)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.skip(f"Redis is not reachable at {url} (see README: deploy/docker-compose.yml)")
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database per test (dropped afterwards), as an asyncpg SQLAlchemy URL."""
    import asyncio
    import uuid

    import asyncpg

    admin = os.environ.get("TALKGATE_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
    name = f"tg_{uuid.uuid4().hex[:12]}"

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    try:
        asyncio.run(run(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.skip(f"PostgreSQL is not reachable at {admin}: {exc}")
    base = admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    yield f"{base}/{name}"
    asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
