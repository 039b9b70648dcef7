"""Two checkouts of the gateway side by side: which one adds less latency, measured fairly.

    .venv/bin/python -m bench.ab_gateways --base /path/to/other/checkout [--requests 5500] [--stream]

Why: whole benchmark runs on a shared 2-core VM differ by ±20 % from one run to the next, which
hides any change smaller than that. Here one simulator serves two gateways at once, one running
this checkout and one running ``--base`` (e.g. ``git worktree add /tmp/base <commit>``), and
one client calls them alternately, one sequential request each, so both see the same machine at
the same moments. Method: 500 warm-up rounds, then ``--requests`` timed rounds; p50/p90/p99 per
gateway. Without ``--base`` (as in ``make bench``) it says so and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.processes import SIM_CODE, gateway_code, gateway_env
from tests.servers import free_port

KEY = "sk-bench-ab"
HERE = Path(__file__).resolve().parent.parent
WARMUP = 500


def start(code: str, env: dict[str, str], checkout: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", code],
        env={**os.environ, **env, "PYTHONPATH": str(checkout)},
        cwd=checkout,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def wait_ready(session: aiohttp.ClientSession, url: str) -> None:
    for _ in range(600):
        try:
            async with session.get(url) as r:
                if r.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise TimeoutError(url)


async def main(base: Path, requests: int, stream: bool) -> None:
    sim_port, base_port, here_port = free_port(), free_port(), free_port()
    tmp = Path(tempfile.mkdtemp(prefix="tg-ab-"))
    procs = [
        start(SIM_CODE.format(key=KEY, port=sim_port), {}, HERE),
        start(gateway_code(base_port), gateway_env(sim_port, KEY, tmp / "base"), base),
        start(gateway_code(here_port), gateway_env(sim_port, KEY, tmp / "here"), HERE),
    ]
    targets = {"base": base_port, "this checkout": here_port}
    timings: dict[str, list[float]] = {name: [] for name in targets}
    try:
        async with aiohttp.ClientSession() as session:
            for port in targets.values():
                await wait_ready(session, f"http://127.0.0.1:{port}/healthz")
            for i in range(WARMUP + requests):
                for name, port in targets.items():
                    body = {
                        "model": "qwen-plus",
                        "messages": [{"role": "user", "content": f"hello {i} {name}"}],  # never cached
                        "stream": stream,
                    }
                    start_t = time.perf_counter()
                    async with session.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body) as r:
                        await r.read()
                        if r.status != 200:
                            raise RuntimeError(f"{name}: {r.status} {await r.text()}")
                    if i >= WARMUP:
                        timings[name].append((time.perf_counter() - start_t) * 1000)
    finally:
        for proc in procs:
            proc.terminate()
    print(f"# A/B, {'streamed' if stream else 'plain'} chat, {requests} alternating sequential requests each")
    print(f"base: {base}; load avg at the end {os.getloadavg()[0]:.2f}")
    for name, values in timings.items():
        values.sort()
        p90, p99 = values[int(len(values) * 0.9)], values[int(len(values) * 0.99)]
        print(f"{name}: p50 {statistics.median(values):.3f} ms, p90 {p90:.3f} ms, p99 {p99:.3f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, default=os.environ.get("TALKGATE_AB_BASE"))
    parser.add_argument("--requests", type=int, default=5500)
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--quick", action="store_true", help="500 requests")
    args = parser.parse_args()
    if args.base is None:
        print("bench.ab_gateways: no --base checkout given (or TALKGATE_AB_BASE): nothing to compare")
        sys.exit(0)
    asyncio.run(main(args.base.resolve(), 500 if args.quick else args.requests, args.stream))
