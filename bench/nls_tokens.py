"""NLS token cache under load: how many CreateToken calls the nls: providers make.

Method: the simulator (Bailian + NLS, ``gateway/sim``) runs in this process on a uvicorn thread
with zero latency; the NLS providers (``providers/cloud/nls.py``) call it over loopback exactly as
they would call Alibaba Cloud: CreateToken through aliyun-python-sdk-core (worker thread), then one
WebSocket task per request. Each phase runs ``--concurrency`` callers, each looping over a short
ASR task (0.5 s of 16 kHz audio) and a short TTS task ("Hello there."), and counts at the
simulator the CreateToken calls it answered and the tasks it ran.

- steady: the simulator's default 36 h token lifetime, ``--tasks`` tasks from a cold start.
- expiring: a ``--ttl`` second token lifetime, ``--seconds`` of continuous load: the refresher
  must replace the token (at half its life, since it is shorter than the 600 s margin) while
  requests keep using the cached one.
- get(): the cost of a cache hit, ``NlsTokenSource.get()`` on a warm cache, 100,000 calls.

Figures: CreateToken calls, tasks, hit rate (token requests answered from the cache), callers that
had to wait for a fetch, and the wall time of ``get()`` as seen by the tasks (p50/p99).

Run: ``.venv/bin/python -m bench.nls_tokens [--concurrency 16 --tasks 400 --ttl 4 --seconds 12]``
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from typing import Any

from gateway.settings import Settings
from gateway.sim.app import create_app
from gateway.sim.config import SimConfig
from providers.base import AudioData, SynthesizeRequest, TranscribeRequest
from providers.cloud.nls import NlsASRProvider, NlsTTSProvider, build_client
from tests.nls_support import nls_settings, nls_sim_config
from tests.servers import ServerThread
from tests.sounds import sine_pcm

AUDIO = AudioData(sine_pcm(0.5, 16000), 16000)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


class Timed:
    """Wraps ``tokens.get`` to time every call the providers make."""

    def __init__(self, tokens: Any) -> None:
        self.inner = tokens.get
        self.ms: list[float] = []
        tokens.get = self

    async def __call__(self) -> str:
        t0 = time.perf_counter()
        try:
            return await self.inner()
        finally:
            self.ms.append((time.perf_counter() - t0) * 1000)


async def _phase(
    app: Any, port: int, concurrency: int, *, tasks: int | None, seconds: float | None
) -> dict[str, Any]:
    nls_state = app.state.nls
    created_before = nls_state.created
    settings = Settings(nls=nls_settings(port), data_dir=tempfile.mkdtemp(), log_json=False)
    client = build_client(settings)
    asr, tts = NlsASRProvider(settings, client), NlsTTSProvider(settings, client)
    await asr.load()
    await tts.load()
    timed = Timed(client.tokens)
    done = 0
    deadline = time.monotonic() + (seconds or 1e9)

    async def caller(index: int) -> None:
        nonlocal done
        while (tasks is None or done < tasks) and time.monotonic() < deadline:
            done += 1
            if (done + index) % 2:
                await asr.transcribe(TranscribeRequest(model="transcriber-16k", audio=AUDIO))
            else:
                await tts.synthesize(
                    SynthesizeRequest(model="synthesizer", text="Hello there.", voice="xiaoyun")
                )

    t0 = time.perf_counter()
    await asyncio.gather(*(caller(i) for i in range(concurrency)))
    wall = time.perf_counter() - t0
    stats = client.tokens.stats
    await asr.unload()
    await tts.unload()
    calls = stats.hits + stats.waits
    return {
        "tasks": done,
        "create_token": nls_state.created - created_before,
        "hit_rate": stats.hits / calls if calls else 0.0,
        "waits": stats.waits,
        "get_p50_ms": _percentile(timed.ms, 0.5),
        "get_p99_ms": _percentile(timed.ms, 0.99),
        "get_max_ms": max(timed.ms),
        "tasks_per_s": done / wall,
    }


async def _get_cost(port: int) -> float:
    settings = Settings(nls=nls_settings(port), data_dir=tempfile.mkdtemp(), log_json=False)
    client = build_client(settings)
    await client.open()
    await client.tokens.get()
    n = 100_000
    t0 = time.perf_counter()
    for _ in range(n):
        await client.tokens.get()
    cost = (time.perf_counter() - t0) / n * 1e6
    await client.close()
    return cost


def _show(name: str, row: dict[str, Any]) -> None:
    print(
        f"{name:9s} tasks={row['tasks']:5d}  CreateToken={row['create_token']:3d}  "
        f"hit rate={row['hit_rate'] * 100:6.2f}%  waited={row['waits']:3d}  "
        f"get() p50={row['get_p50_ms']:.3f} ms p99={row['get_p99_ms']:.3f} ms max={row['get_max_ms']:.1f} ms  "
        f"{row['tasks_per_s']:.0f} tasks/s"
    )


async def main_async(args: argparse.Namespace) -> None:
    app = create_app(SimConfig(api_keys=["bench"]), nls_port=0, nls_config=nls_sim_config())
    server = ServerThread(app).start()
    try:
        port = app.state.nls_port
        print(__doc__.split("Run:")[0].strip(), "\n")
        print(f"concurrency {args.concurrency}\n")
        _show("steady", await _phase(app, port, args.concurrency, tasks=args.tasks, seconds=None))
        app.state.nls.config.token_ttl_s = args.ttl
        row = await _phase(app, port, args.concurrency, tasks=None, seconds=args.seconds)
        _show(f"ttl {args.ttl:g}s", row)
        print(f"\nget() on a warm cache: {await _get_cost(port):.2f} µs per call")
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--tasks", type=int, default=400)
    parser.add_argument("--ttl", type=float, default=4.0)
    parser.add_argument("--seconds", type=float, default=12.0)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
