"""Gateway CPU per chat request: the figure that sets its latency under load.

At 32 concurrent clients one gateway process runs its event loop at about one core, so a
request's latency is mostly the CPU time of the requests queued before it. This benchmark
measures that CPU time directly and with less noise than a P99.

Method: the simulator (zero latency) and the gateway (default settings, as in
``bench.gateway_overhead``) run as separate uvicorn + uvloop + httptools processes. After a
warm-up of 640 requests, 32 aiohttp clients send ``--requests`` plain, then streamed, chat
completions. Each prompt is unique, so nothing comes from the cache. The figure is the gateway
process's user + system CPU time, read from ``/proc/<pid>/stat`` and covering all of its
threads, divided by the number of requests. It is repeated ``--repeats`` times. Linux only.

Run: ``.venv/bin/python -m bench.gateway_cpu [--requests 5000] [--repeats 3] [--quick]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.gateway_overhead import KEY, Target, latencies, openai_body, pct, wait_ready
from bench.processes import SIM_CODE, gateway_code, gateway_env, start, stop
from tests.servers import free_port


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (all threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run(requests: int, repeats: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="tg-cpu-"))
    sim_port, gw_port = free_port(), free_port()
    env = gateway_env(sim_port, KEY, tmp / "data")
    procs = [
        start(SIM_CODE.format(key=KEY, port=sim_port), {}, tmp / "sim.log"),
        start(gateway_code(gw_port), env, tmp / "gateway.log"),
    ]
    try:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as s:
            await wait_ready(s, f"http://127.0.0.1:{sim_port}/sim/health", procs[0], tmp / "sim.log")
            await wait_ready(s, f"http://127.0.0.1:{gw_port}/healthz", procs[1], tmp / "gateway.log")
            auth = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}
            target = Target(
                "talkgate", f"http://127.0.0.1:{gw_port}/v1/chat/completions", openai_body("qwen-plus"), auth
            )
            print(__doc__.split("Method:")[1].split("Run:")[0].strip())
            print(f"\nmachine: {os.cpu_count()} CPUs; {requests} requests x {repeats} per mode, 32 clients\n")
            print("| mode | gateway CPU per request | req/s | p50 | p99 |")
            print("|---|---|---|---|---|")
            for stream in (False, True):
                await latencies(s, target, stream, 32, 640)  # warm-up
                for _ in range(repeats):
                    before, started = cpu_seconds(procs[1].pid), time.perf_counter()
                    samples = await latencies(s, target, stream, 32, requests)
                    spent, elapsed = cpu_seconds(procs[1].pid) - before, time.perf_counter() - started
                    print(
                        f"| {'streamed' if stream else 'plain'} | {spent / requests * 1e6:.0f} µs "
                        f"| {requests / elapsed:.0f} | {pct(samples, 0.5):.2f} ms | {pct(samples, 0.99):.2f} ms |"
                    )
    finally:
        stop(procs, timeout_s=15)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1,000 requests once per mode (smoke run)")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.repeats = 1000, 1
    asyncio.run(run(args.requests, args.repeats))


if __name__ == "__main__":
    main()
