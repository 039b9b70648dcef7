"""What the Bailian providers add on top of the wire, measured against the simulator.

Method: the simulator runs in its own process (``talkgate sim``) with zero latency. For each
chat case we time N sequential calls three ways: a bare request that only reads the bytes,
once on a keep-alive aiohttp session and once on the provider's own HTTP/1.1 pool
(``providers/cloud/http1.py``; the floor: simulator + loopback + client), and the provider
call (body building, orjson, SSE parsing, error checks, dataclasses). The difference of
medians (provider − bare pool) is the provider's own cost per call. The client CPU per call
(this process's CPU time over 2,000 calls from 8 concurrent callers, simulator elsewhere)
compares the two clients directly: it is what each call costs the gateway's event loop. For
the WebSocket TTS we compare a fresh connection per task with the provider's pooled
connection (the handshake a pool saves).

Run: ``.venv/bin/python -m bench.cloud_providers [--n 300]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson

from gateway.settings import Settings
from providers.base import ChatRequest, SynthesizeRequest
from providers.cloud import BailianChatProvider, BailianTTSProvider, DashScopeClient
from providers.cloud.chat import GENERATION_PATH, build_body
from tests.servers import free_port

MESSAGES = [{"role": "user", "content": "Say something short about latency."}]


async def _timed(n: int, call: Callable[[], Awaitable[Any]]) -> list[float]:
    for _ in range(min(20, n)):  # warm-up: pooled connections, caches
        await call()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        await call()
        out.append((time.perf_counter() - t0) * 1000)
    return out


CPU_CALLS = 2000
CPU_CALLERS = 8


async def _cpu_per_call(call: Callable[[], Awaitable[Any]]) -> float:
    """This process's CPU time per call (µs), with ``CPU_CALLERS`` callers sharing the loop."""
    await asyncio.gather(*(call() for _ in range(CPU_CALLERS)))  # warm the pool to its size
    per_caller = CPU_CALLS // CPU_CALLERS

    async def caller() -> None:
        for _ in range(per_caller):
            await call()

    started = time.process_time()
    await asyncio.gather(*(caller() for _ in range(CPU_CALLERS)))
    return (time.process_time() - started) / (per_caller * CPU_CALLERS) * 1e6


def _row(name: str, ms: list[float]) -> str:
    ms = sorted(ms)
    p95 = ms[int(len(ms) * 0.95) - 1]
    return f"  {name:<38} median {statistics.median(ms):7.3f} ms   p95 {p95:7.3f} ms"


async def run(port: int, n: int) -> None:
    base = f"http://127.0.0.1:{port}"
    settings = Settings(
        dashscope_api_key="sk-bench",
        dashscope_http_base_url=f"{base}/api/v1",
        dashscope_websocket_base_url=f"ws://127.0.0.1:{port}/api-ws/v1/inference",
    )
    client = DashScopeClient(settings)
    chat = BailianChatProvider(settings, client)
    tts = BailianTTSProvider(settings, client)
    await chat.load()
    await tts.load()
    request = ChatRequest(model="qwen-plus", messages=MESSAGES, max_tokens=32)
    url = client.url(GENERATION_PATH)
    plain_body = orjson.dumps(build_body(request, 4096, stream=False))
    stream_body = orjson.dumps(build_body(request, 4096, stream=True))
    headers = {"Authorization": "Bearer sk-bench", "Content-Type": "application/json"}
    sse_headers = {**headers, "X-DashScope-SSE": "enable", "Accept": "text/event-stream"}
    session = client.session
    pool = client.http
    plain_head = pool.request_head(GENERATION_PATH, headers)
    sse_head = pool.request_head(GENERATION_PATH, sse_headers)

    async def aiohttp_plain() -> None:
        async with session.post(url, data=plain_body, headers=headers) as r:
            await r.read()

    async def aiohttp_stream() -> None:
        async with session.post(url, data=stream_body, headers=sse_headers) as r:
            async for _ in r.content.iter_any():
                pass

    async def pool_plain() -> None:
        await pool.post(plain_head, plain_body, 30.0)

    async def pool_stream() -> None:
        stream = await pool.stream(sse_head, stream_body, 30.0)
        try:
            async for _ in stream.chunks():
                pass
        finally:
            stream.close()

    async def provider_plain() -> None:
        await chat.chat(request)

    async def provider_stream() -> None:
        async for _ in chat.chat_stream(request):
            pass

    results = {
        "chat plain, bare aiohttp": await _timed(n, aiohttp_plain),
        "chat plain, bare HTTP/1.1 pool": await _timed(n, pool_plain),
        "chat plain, BailianChatProvider": await _timed(n, provider_plain),
        "chat stream, bare aiohttp": await _timed(n, aiohttp_stream),
        "chat stream, bare HTTP/1.1 pool": await _timed(n, pool_stream),
        "chat stream, BailianChatProvider": await _timed(n, provider_stream),
    }
    cpu = {
        "plain, aiohttp": await _cpu_per_call(aiohttp_plain),
        "plain, HTTP/1.1 pool": await _cpu_per_call(pool_plain),
        "stream, aiohttp": await _cpu_per_call(aiohttp_stream),
        "stream, HTTP/1.1 pool": await _cpu_per_call(pool_stream),
    }
    speech = SynthesizeRequest(model="cosyvoice-v2", text="Hello there.", voice="longxiaochun_v2")
    m = max(20, n // 5)

    async def tts_pooled() -> None:
        await tts.synthesize(speech)

    async def tts_fresh() -> None:
        for ws, _ in client._idle_ws:
            await ws.close()
        client._idle_ws.clear()
        await tts.synthesize(speech)

    results["cosyvoice task, fresh WebSocket"] = await _timed(m, tts_fresh)
    results["cosyvoice task, pooled WebSocket"] = await _timed(m, tts_pooled)
    await chat.unload()
    await tts.unload()

    print(f"Bailian providers vs bare clients, simulator in its own process, n={n} (TTS n={m})")
    for name, ms in results.items():
        print(_row(name, ms))
    med = {k: statistics.median(v) for k, v in results.items()}
    print("provider's own cost (difference of medians, provider - bare HTTP/1.1 pool):")
    for kind in ("plain", "stream"):
        own = med[f"chat {kind}, BailianChatProvider"] - med[f"chat {kind}, bare HTTP/1.1 pool"]
        print(f"  chat {kind:<6} {own:+.3f} ms")
    print(f"client CPU per call ({CPU_CALLS} calls, {CPU_CALLERS} concurrent callers):")
    for name, us in cpu.items():
        print(f"  {name:<22} {us:6.1f} µs")
    saved = med["cosyvoice task, fresh WebSocket"] - med["cosyvoice task, pooled WebSocket"]
    print(f"  WebSocket pool saves {saved:.3f} ms per TTS task on loopback (more over TLS to the cloud)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=300)
    args = parser.parse_args()
    port = free_port()
    env = {**os.environ, "TALKGATE_SIM_API_KEYS": ""}
    sim = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "sim", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                asyncio.run(_ping(port))
                break
            except (aiohttp.ClientError, OSError):
                if time.monotonic() > deadline or sim.poll() is not None:
                    raise SystemExit("the simulator did not start") from None
                time.sleep(0.2)
        asyncio.run(run(port, args.n))
    finally:
        sim.terminate()
        sim.wait(timeout=10)


async def _ping(port: int) -> None:
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/sim/requests") as r:
        r.raise_for_status()


if __name__ == "__main__":
    main()
