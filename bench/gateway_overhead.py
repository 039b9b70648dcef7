"""Gateway overhead: chat through talkgate (and through LiteLLM's proxy) vs straight to the simulator.

Run: ``.venv/bin/python -m bench.gateway_overhead [--quick] [--no-litellm]``

Method (printed with the figures):
- Three processes, each uvicorn with uvloop + httptools and one worker: the Bailian simulator
  (zero configured latency), the talkgate gateway pointed at it, and, if ``/work/litellm-venv``
  exists, LiteLLM's proxy with an ``openai/qwen-plus`` model pointed at the simulator's
  ``/compatible-mode/v1``. The load generator is this process: one aiohttp session.
- Targets: ``direct`` = the simulator's OpenAI-compatible endpoint (what an app would call
  without a gateway); ``native`` = the simulator's DashScope endpoint, the one talkgate's
  Bailian provider calls (so gateway − native isolates the gateway itself); ``talkgate``;
  ``litellm``.
- Each request's latency is the time to the last body byte. Every prompt carries a counter so
  no request can be served from a cache. Rounds alternate targets to cancel drift. Per target
  and mode: 300 sequential requests, then 1,920 at 32 clients, each in 6 rounds (so a P99 at
  32 clients is the 20th-slowest of 1,920 requests, not one single stall).
- Added latency = gateway percentile − direct percentile, at 1 and 32 concurrent clients;
  throughput = completed requests/s with 64 concurrent clients over a fixed window.
- Everything shares the same 2-core VM, so the load generator competes with the servers.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson

from bench.processes import SIM_CODE, gateway_code, gateway_env, start, stop
from tests.servers import free_port

KEY = "sk-bench"
LITELLM_MASTER_KEY = "sk-" + os.urandom(32).hex()
#: LiteLLM's own venv; `make bench` installs bench/requirements-litellm.txt (pinned) there.
LITELLM_VENV = Path(
    os.environ.get("LITELLM_VENV", Path(__file__).resolve().parent.parent / ".bench" / "litellm")
)
PROMPT = "Please summarise our refund policy for order number {n:08d} in two sentences."


@dataclass
class Target:
    name: str
    url: str
    body: Callable[[int, bool], bytes]
    headers: dict[str, str]


def openai_body(model: str) -> Callable[[int, bool], bytes]:
    def make(n: int, stream: bool) -> bytes:
        body = {
            "model": model,
            "messages": [{"role": "user", "content": PROMPT.format(n=n)}],
            "max_tokens": 64,
        }
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return orjson.dumps(body)

    return make


def native_body(n: int, stream: bool) -> bytes:
    body = {
        "model": "qwen-plus",
        "input": {"messages": [{"role": "user", "content": PROMPT.format(n=n)}]},
        "parameters": {"result_format": "message", "max_tokens": 64, "incremental_output": stream},
    }
    return orjson.dumps(body)


async def wait_ready(session: aiohttp.ClientSession, url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited: {log.read_text()[-2000:]}")  # noqa: ASYNC240
        try:
            async with session.get(url) as r:
                if r.status < 500:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.2)
    raise TimeoutError(f"{url} did not come up; see {log}")


counter = itertools.count()


async def one(session: aiohttp.ClientSession, target: Target, stream: bool) -> float:
    n = next(counter)
    data = target.body(n, stream)
    started = time.perf_counter()
    async with session.post(target.url, data=data, headers=target.headers) as r:
        payload = await r.read()
        elapsed = time.perf_counter() - started
        if r.status != 200:
            raise RuntimeError(f"{target.name}: HTTP {r.status}: {payload[:300]!r}")
    if stream and b"[DONE]" not in payload and b'"finish_reason":"stop"' not in payload:
        raise RuntimeError(f"{target.name}: stream did not finish: {payload[-300:]!r}")
    return elapsed


async def latencies(
    session: aiohttp.ClientSession, target: Target, stream: bool, concurrency: int, total: int
) -> list[float]:
    out: list[float] = []
    remaining = iter(range(total))

    async def worker() -> None:
        for _ in remaining:
            out.append(await one(session, target, stream))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return out


async def throughput(session: aiohttp.ClientSession, target: Target, stream: bool, seconds: float) -> float:
    done = 0
    stop_at = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < stop_at:
            await one(session, target, stream)
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(64)))
    return done / (time.perf_counter() - started)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def measure(targets: list[Target], quick: bool) -> dict:
    seq_n, conc_n, tput_s, rounds = (100, 320, 2.0, 2) if quick else (300, 1920, 5.0, 6)
    results: dict = {}
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        for stream in (False, True):
            mode = "stream" if stream else "plain"
            for t in targets:  # warm-up: connections, caches, JIT-free but lazy imports
                await latencies(session, t, stream, 8, 100)
            for concurrency, total in ((1, seq_n), (32, conc_n)):
                samples: dict[str, list[float]] = {t.name: [] for t in targets}
                for _ in range(rounds):  # alternate targets to cancel drift
                    for t in targets:
                        samples[t.name] += await latencies(session, t, stream, concurrency, total // rounds)
                for name, values in samples.items():
                    results[(mode, concurrency, name)] = (pct(values, 0.5), pct(values, 0.99), len(values))
            for t in targets:
                results[(mode, "rps", t.name)] = await throughput(session, t, stream, tput_s)
    return results


def report(results: dict, names: list[str]) -> str:
    lines = []
    for mode in ("plain", "stream"):
        lines.append(f"\n### chat, {mode}\n")
        lines.append("| target | c=1 p50 ms | c=1 p99 ms | c=32 p50 ms | c=32 p99 ms | req/s @64 |")
        lines.append("|---|---|---|---|---|---|")
        for name in names:
            s50, s99, _ = results[(mode, 1, name)]
            c50, c99, _ = results[(mode, 32, name)]
            rps = results[(mode, "rps", name)]
            lines.append(f"| {name} | {s50:.2f} | {s99:.2f} | {c50:.2f} | {c99:.2f} | {rps:.0f} |")
        lines.append("")
        for gw in [n for n in ("talkgate", "litellm") if n in names]:
            for base in ("direct", "native"):
                s = [results[(mode, 1, gw)][i] - results[(mode, 1, base)][i] for i in (0, 1)]
                c = [results[(mode, 32, gw)][i] - results[(mode, 32, base)][i] for i in (0, 1)]
                lines.append(
                    f"- {gw} added vs {base}: c=1 median {s[0]:+.2f} ms, p99 {s[1]:+.2f} ms; "
                    f"c=32 median {c[0]:+.2f} ms, p99 {c[1]:+.2f} ms"
                )
        if "litellm" in names:
            ratio = results[(mode, "rps", "talkgate")] / results[(mode, "rps", "litellm")]
            lines.append(f"- talkgate req/s ÷ litellm req/s at 64 concurrent: {ratio:.1f}×")
    return "\n".join(lines)


def litellm_config(sim_port: int) -> str:
    return textwrap.dedent(
        f"""
        model_list:
          - model_name: qwen-plus
            litellm_params:
              model: openai/qwen-plus
              api_base: http://127.0.0.1:{sim_port}/compatible-mode/v1
              api_key: {KEY}
        litellm_settings:
          drop_params: true
          telemetry: false
        """
    )


async def main_async(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="tg-bench-"))
    sim_port, gw_port, ll_port = free_port(), free_port(), free_port()
    procs: list[subprocess.Popen] = []
    try:
        sim_log, gw_log = tmp / "sim.log", tmp / "gateway.log"
        procs.append(start(SIM_CODE.format(key=KEY, port=sim_port), {}, sim_log))
        procs.append(start(gateway_code(gw_port), gateway_env(sim_port, KEY, tmp / "data"), gw_log))
        use_litellm = not args.no_litellm and (LITELLM_VENV / "bin" / "litellm").exists()
        if not args.no_litellm and not use_litellm:
            print(
                f"LiteLLM not found in {LITELLM_VENV}: comparison skipped "
                "(`make bench` installs bench/requirements-litellm.txt there)",
                file=sys.stderr,
            )
        if use_litellm:
            cfg = tmp / "litellm.yaml"
            cfg.write_text(litellm_config(sim_port))
            ll_log = tmp / "litellm.log"
            procs.append(
                subprocess.Popen(  # noqa: ASYNC220 - start-up only, before measuring
                    [
                        str(LITELLM_VENV / "bin" / "litellm"),
                        *("--config", str(cfg), "--port", str(ll_port)),
                        *("--num_workers", "1", "--host", "127.0.0.1"),
                    ],
                    env={
                        **os.environ,
                        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                        "LITELLM_LOG": "ERROR",
                        "LITELLM_TELEMETRY": "False",
                        "LITELLM_MASTER_KEY": LITELLM_MASTER_KEY,
                    },
                    stdout=ll_log.open("wb"),
                    stderr=subprocess.STDOUT,
                )
            )
        async with aiohttp.ClientSession() as s:
            await wait_ready(s, f"http://127.0.0.1:{sim_port}/sim/health", procs[0], sim_log)
            await wait_ready(s, f"http://127.0.0.1:{gw_port}/healthz", procs[1], gw_log)
            if use_litellm:
                await wait_ready(s, f"http://127.0.0.1:{ll_port}/health/liveliness", procs[2], ll_log)
        auth = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}
        targets = [
            Target(
                "direct",
                f"http://127.0.0.1:{sim_port}/compatible-mode/v1/chat/completions",
                openai_body("qwen-plus"),
                auth,
            ),
            Target(
                "native",
                f"http://127.0.0.1:{sim_port}/api/v1/services/aigc/text-generation/generation",
                native_body,
                auth,
            ),
            Target(
                "talkgate", f"http://127.0.0.1:{gw_port}/v1/chat/completions", openai_body("qwen-plus"), auth
            ),
        ]
        if use_litellm:
            targets.append(
                Target(
                    "litellm",
                    f"http://127.0.0.1:{ll_port}/v1/chat/completions",
                    openai_body("qwen-plus"),
                    {**auth, "authorization": f"Bearer {LITELLM_MASTER_KEY}"},
                )
            )
        # stream mode needs the SSE header on the native endpoint
        native_stream_headers = {**auth, "x-dashscope-sse": "enable"}

        def native_headers_for(stream: bool) -> dict[str, str]:
            return native_stream_headers if stream else auth

        native = targets[1]
        orig_body = native.body

        def native_body_and_headers(n: int, stream: bool) -> bytes:
            native.headers = native_headers_for(stream)
            return orig_body(n, stream)

        native.body = native_body_and_headers
        started = time.monotonic()
        results = await measure(targets, args.quick)
        names = [t.name for t in targets]
        print(__doc__.split("Method (printed with the figures):")[1].split('"""')[0])
        print(
            f"machine: {os.cpu_count()} CPUs; python {sys.version.split()[0]}; run took {time.monotonic() - started:.0f} s"
        )
        print(report(results, names))
    finally:
        stop(procs, timeout_s=15)


def main() -> None:
    parser = argparse.ArgumentParser(description="talkgate gateway overhead benchmark")
    parser.add_argument("--quick", action="store_true", help="fewer requests (smoke run)")
    parser.add_argument("--no-litellm", action="store_true", help="skip the LiteLLM comparison")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
