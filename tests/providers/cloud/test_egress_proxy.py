"""Egress proxy: every cloud client (HTTP pool, SSE, WebSockets, downloads, the NLS token fetch and
NLS WebSocket) goes through the proxy chosen by ``EgressProxy``: absolute-form for http/ws, a
CONNECT tunnel for https/wss, and loopback direct unless told otherwise."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from providers.base import AudioData, ChatRequest, TranscribeRequest
from providers.cloud.nls import NlsASRProvider, build_client
from providers.cloud.proxy import EgressProxy
from tests.conftest import SIM_KEY, SimHandle
from tests.nls_support import nls_settings, nls_sim_config, reset_nls
from tests.proxy_support import RecordingProxy, local_ca
from tests.servers import ServerThread
from tests.sounds import sine_pcm

CHAT = ChatRequest(model="qwen-plus", messages=[{"role": "user", "content": "hello"}])
SPEECH = AudioData(sine_pcm(0.5, 16000), 16000)


@pytest.fixture
def proxy() -> Iterator[RecordingProxy]:
    server = RecordingProxy().start()
    yield server
    server.stop()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    return monkeypatch


def test_proxy_choice_rules(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("HTTPS_PROXY", "http://corp-proxy:3128")
    clean_env.setenv("http_proxy", "http://plain-proxy:8080")
    clean_env.setenv("NO_PROXY", "internal.example,.svc")
    env = EgressProxy.from_settings(None)
    assert env.for_url("https://dashscope.aliyuncs.com/api/v1") == "http://corp-proxy:3128"
    assert env.for_url("wss://nls-gateway-cn-shanghai.aliyuncs.com/ws/v1") == "http://corp-proxy:3128"
    assert env.for_url("http://nls-meta.cn-shanghai.aliyuncs.com/") == "http://plain-proxy:8080"
    assert env.for_url("ws://example.com/x") == "http://plain-proxy:8080"
    for direct in (
        "https://127.0.0.1:8100/",
        "ws://localhost:1/",
        "https://[::1]:9/",
        "https://internal.example/",
    ):
        assert env.for_url(direct) is None, direct
    assert env.for_url("https://api.svc/") is None
    assert env.requests_proxies("https://127.0.0.1/") == {"http": None, "https": None}

    class Egress:
        proxy = "http://explicit:3128"
        no_proxy: list[str] = []
        proxy_loopback = True
        ca_file = None

    class Settings:
        egress = Egress()

    explicit = EgressProxy.from_settings(Settings())
    assert explicit.for_url("https://127.0.0.1/") == "http://explicit:3128"
    assert explicit.for_url("https://internal.example/") == "http://explicit:3128"  # NO_PROXY replaced


@pytest.fixture
async def clients(gateway_settings: Callable[..., Any], sim: SimHandle) -> AsyncIterator[Callable[..., Any]]:
    """(Bailian providers on one DashScope client, NLS ASR provider) for settings overrides."""
    from providers.cloud import BailianASRProvider, BailianChatProvider, DashScopeClient

    reset_nls(sim)
    loaded: list[Any] = []

    async def make(nls_port: int, nls_scheme: str = "http", **overrides: Any) -> tuple[Any, Any, Any]:
        ws = "wss" if nls_scheme == "https" else "ws"
        nls = nls_settings(
            nls_port,
            token_endpoint=f"{nls_scheme}://127.0.0.1:{nls_port}",
            gateway_url=f"{ws}://127.0.0.1:{nls_port}/ws/v1",
        )
        settings = gateway_settings(nls=nls, upstream_timeout_s=10.0, **overrides)
        client = DashScopeClient(settings)
        trio = (BailianChatProvider(settings, client), BailianASRProvider(settings, client))
        nls_asr = NlsASRProvider(settings, build_client(settings))
        for provider in (*trio, nls_asr):
            await provider.load()
            loaded.append(provider)
        return trio[0], trio[1], nls_asr

    yield make
    for provider in loaded:
        await provider.unload()
    reset_nls(sim)


async def exercise(chat: Any, asr: Any, nls_asr: Any, download_url: str) -> None:
    assert (await chat.chat(CHAT)).text
    assert [c async for c in chat.chat_stream(CHAT)]
    assert (await asr.transcribe(TranscribeRequest(model="paraformer-realtime-v2", audio=SPEECH))).text
    assert await asr.client.download(download_url)
    assert (await nls_asr.transcribe(TranscribeRequest(model="transcriber-16k", audio=SPEECH))).text


async def test_loopback_bypasses_the_environment_proxy(
    sim: SimHandle, proxy: RecordingProxy, clients: Any, clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv("HTTPS_PROXY", proxy.url)
    clean_env.setenv("HTTP_PROXY", proxy.url)
    chat, asr, nls_asr = await clients(sim.nls_port)
    await exercise(chat, asr, nls_asr, f"{sim.url}/sim/health")
    assert proxy.seen == []
    assert sim.nls.created == 1  # aliyunsdkcore, which ignores NO_PROXY itself, went direct too


async def test_plain_http_and_ws_calls_go_through_the_proxy(
    sim: SimHandle, proxy: RecordingProxy, clients: Any, clean_env: pytest.MonkeyPatch
) -> None:
    egress = {"proxy": proxy.url, "proxy_loopback": True}
    chat, asr, nls_asr = await clients(sim.nls_port, egress=egress)
    await exercise(chat, asr, nls_asr, f"{sim.url}/sim/health")
    origin, nls_origin = f"127.0.0.1:{sim.server.port}", f"127.0.0.1:{sim.nls_port}"
    seen = set(proxy.seen)
    assert f"POST http://{origin}/api/v1/services/aigc/text-generation/generation" in seen
    assert f"GET ws://{origin}/api-ws/v1/inference" in seen  # aiohttp names ws:// in absolute form
    assert f"GET http://{origin}/sim/health" in seen
    assert any(s.startswith(f"POST http://{nls_origin}/?") and "Action=CreateToken" in s for s in seen)
    assert f"GET ws://{nls_origin}/ws/v1" in seen
    assert not any(s.startswith("CONNECT") for s in seen)


@pytest.fixture
def tls_sim(tmp_path: Path) -> Iterator[tuple[ServerThread, Path]]:
    from gateway.sim.app import create_app
    from gateway.sim.config import SimConfig

    cert, key = local_ca(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    app = create_app(SimConfig(api_keys=[SIM_KEY]), nls_port=0, nls_config=nls_sim_config(), nls_ssl=context)
    server = ServerThread(app, ssl_certfile=str(cert), ssl_keyfile=str(key)).start()
    yield server, cert
    server.stop()


async def test_https_and_wss_calls_tunnel_through_connect(
    tls_sim: tuple[ServerThread, Path], proxy: RecordingProxy, clients: Any, clean_env: pytest.MonkeyPatch
) -> None:
    server, cert = tls_sim
    port, nls_port = server.port, server.server.config.app.state.nls_port
    chat, asr, nls_asr = await clients(
        nls_port,
        nls_scheme="https",
        dashscope_http_base_url=f"https://127.0.0.1:{port}/api/v1",
        dashscope_websocket_base_url=f"wss://127.0.0.1:{port}/api-ws/v1/inference",
        egress={"proxy": proxy.url, "proxy_loopback": True, "ca_file": str(cert)},
    )
    await exercise(chat, asr, nls_asr, f"https://127.0.0.1:{port}/sim/health")
    assert set(proxy.seen) == {f"CONNECT 127.0.0.1:{port}", f"CONNECT 127.0.0.1:{nls_port}"}
    # the pool reuses its tunnelled connection: far fewer tunnels than calls
    assert proxy.seen.count(f"CONNECT 127.0.0.1:{port}") <= 4
