"""SaaS-layer benchmark: cache-hit latency end to end, rate-limit cost, usage-write throughput.

Run: ``.venv/bin/python -m bench.saas`` (needs Redis at 127.0.0.1:6379; uses database 11, and
PostgreSQL at 127.0.0.1:5432 when reachable). Method:

1. Cache hit, end to end: the simulator (``talkgate sim``) and the gateway (``talkgate serve``:
   uvloop, httptools, API keys on, Redis for limits and cache) run as separate processes. One
   /v1/audio/speech request fills the cache with a WAV of about 100 KB; then N sequential
   requests over one keep-alive connection are timed at the client. Every one is authenticated,
   rate-limited in Redis (an rpm limit so the Lua script runs), served from Redis and recorded.
2. Rate-limit cost: ``RedisRateLimiter.acquire`` (one EVALSHA: rpm + tpm + concurrency) and the
   in-process limiter, timed one call at a time.
3. Usage writes: rows added to ``UsageRecorder`` and flushed in batches of 2000 (executemany),
   SQLite file and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from bench.processes import gateway_env, stop

REDIS = "redis://127.0.0.1:6379/11"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
ADMIN_KEY = "bench-admin-key-0123456789"


def _pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(url)


def bench_cache_hit(n: int = 1000) -> dict[str, Any]:
    import redis

    redis.Redis.from_url(REDIS).flushdb()
    exe = str(Path(sys.executable).with_name("talkgate"))
    sim_port, gw_port = _free_port(), _free_port()
    tmp = tempfile.mkdtemp(prefix="tg-bench-")
    env = {
        **os.environ,
        **gateway_env(sim_port, "sk-bench", tmp),
        "TALKGATE_ADMIN_KEY": ADMIN_KEY,
        "TALKGATE_REDIS_URL": REDIS,
    }
    procs = [
        subprocess.Popen([exe, "sim", "--port", str(sim_port)], env=env, stdout=subprocess.DEVNULL),
        subprocess.Popen(
            [exe, "serve", "--port", str(gw_port), "--log-level", "warning"],
            env=env,
            stdout=subprocess.DEVNULL,
        ),
    ]
    try:
        _wait(f"http://127.0.0.1:{sim_port}/sim/health")
        _wait(f"http://127.0.0.1:{gw_port}/healthz")
        base = f"http://127.0.0.1:{gw_port}"
        admin = {"authorization": f"Bearer {ADMIN_KEY}"}
        key = httpx.post(
            f"{base}/admin/keys", json={"tenant": "bench", "scopes": ["tts"], "rpm": 1_000_000}, headers=admin
        ).json()["key"]
        words = [
            "the",
            "quick",
            "brown",
            "fox",
            "jumps",
            "over",
            "the",
            "lazy",
            "dog",
            "and",
            "keeps",
            "running",
            "far",
            "away",
        ]
        with httpx.Client(base_url=base, headers={"authorization": f"Bearer {key}"}, timeout=30) as c:
            for n_words in range(1, len(words) + 1):  # the shortest text giving at least 100 KB of WAV
                text = " ".join(words[:n_words]) + "."
                body = {"model": "tts-1", "input": text, "voice": "alloy", "response_format": "wav"}
                first = c.post("/v1/audio/speech", json=body)
                assert first.status_code == 200 and first.headers["x-talkgate-cache"] == "miss", first.text
                size = len(first.content)
                if size >= 100 * 1024:
                    break
            for _ in range(50):  # warm-up
                c.post("/v1/audio/speech", json=body)
            lat, overhead = [], []
            for _ in range(n):
                t0 = time.perf_counter()
                r = c.post("/v1/audio/speech", json=body)
                lat.append((time.perf_counter() - t0) * 1000)
                assert r.headers["x-talkgate-cache"] == "hit" and len(r.content) == size
                overhead.append(float(r.headers["x-talkgate-overhead-ms"]))
        return {
            "bytes": size,
            "n": n,
            "p50_ms": statistics.median(lat),
            "p95_ms": _pct(lat, 95),
            "p99_ms": _pct(lat, 99),
            "server_p50_ms": statistics.median(overhead),
        }
    finally:
        stop(procs)


async def bench_ratelimit(n: int = 3000) -> dict[str, float]:
    import redis.asyncio as aioredis

    from policies.ratelimit import Limits, MemoryRateLimiter, RedisRateLimiter

    client = aioredis.Redis.from_url(REDIS)
    out: dict[str, float] = {}
    try:
        limiter = RedisRateLimiter(client)
        limits = Limits(rpm=10_000_000, tpm=10_000_000, concurrency=1_000_000)
        for label, lim in (("redis", limiter), ("memory", MemoryRateLimiter())):
            for _ in range(200):
                d = await lim.acquire("bench", limits, 100)
                await lim.release("bench", d.slot)
            times = []
            for _ in range(n):
                t0 = time.perf_counter()
                d = await lim.acquire("bench", limits, 100)
                times.append((time.perf_counter() - t0) * 1000)
                await lim.release("bench", d.slot)
            out[f"{label}_median_ms"] = statistics.median(times)
            out[f"{label}_p99_ms"] = _pct(times, 99)
    finally:
        await client.aclose()
    return out


async def _usage_rows_per_s(url: str, rows: int) -> float:
    from gateway.db import create_engine, run_migrations, session_factory
    from gateway.usage import UsageRecorder

    engine = create_engine(url)
    try:
        await run_migrations(engine)
        recorder = UsageRecorder(session_factory(engine), batch_rows=2000, buffer_rows=rows + 1)
        for i in range(rows):
            recorder.add(
                {
                    "request_id": uuid.uuid4().hex,
                    "key_id": f"key_{i % 50}",
                    "tenant": f"t{i % 5}",
                    "route": "/v1/chat/completions",
                    "provider": "bailian:qwen-plus",
                    "model": "qwen-plus",
                    "tokens_in": 20,
                    "tokens_out": 40,
                    "latency_ms": 12.5,
                }
            )
        t0 = time.perf_counter()
        written = await recorder.flush()
        return written / (time.perf_counter() - t0)
    finally:
        await engine.dispose()


async def bench_usage(rows: int = 50_000) -> dict[str, float]:
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        out["sqlite_rows_per_s"] = await _usage_rows_per_s(f"sqlite+aiosqlite:///{tmp}/u.db", rows)
    try:
        import asyncpg

        name = f"tg_bench_{uuid.uuid4().hex[:8]}"
        conn = await asyncpg.connect(PG_ADMIN)
        await conn.execute(f'CREATE DATABASE "{name}"')
        await conn.close()
        try:
            url = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://") + f"/{name}"
            out["postgres_rows_per_s"] = await _usage_rows_per_s(url, rows)
        finally:
            conn = await asyncpg.connect(PG_ADMIN)
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await conn.close()
    except OSError as exc:
        print(f"PostgreSQL not reachable, skipped: {exc}")
    return out


def main() -> None:
    print(__doc__)
    hit = bench_cache_hit()
    print(
        f"cache hit, TTS WAV of {hit['bytes'] / 1024:.0f} KiB from Redis, {hit['n']} sequential requests: "
        f"P50 {hit['p50_ms']:.2f} ms, P95 {hit['p95_ms']:.2f} ms, P99 {hit['p99_ms']:.2f} ms "
        f"(gateway-reported overhead P50 {hit['server_p50_ms']:.2f} ms)"
    )
    rl = asyncio.run(bench_ratelimit())
    print(
        f"rate-limit check: Redis Lua median {rl['redis_median_ms']:.3f} ms (P99 {rl['redis_p99_ms']:.3f}); "
        f"in-process median {rl['memory_median_ms'] * 1000:.1f} us"
    )
    usage = asyncio.run(bench_usage())
    print("usage writes: " + ", ".join(f"{k} {v:,.0f}" for k, v in usage.items()))


if __name__ == "__main__":
    main()
