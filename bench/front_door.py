"""Front-door overhead: the official dashscope SDK → talkgate → simulator vs the SDK → simulator.

Run: ``.venv/bin/python -m bench.front_door [--quick]``

Method (printed with the figures):
- Two processes, each uvicorn with uvloop + httptools and one worker: the Bailian simulator (zero
  configured latency) and the talkgate gateway whose Bailian providers call it (cache off, no
  keys, default chains). The client is this process: the official ``dashscope`` SDK 2.0.2,
  ``Generation.call`` as an application calls it (``requests`` under the hood, a new
  connection per call, as the SDK does), with ``dashscope.base_http_api_url`` switched between
  the gateway's front door and the simulator itself.
- Each call's latency is the SDK call's wall time (plain: until the response object; streamed:
  until the generator is exhausted). Every prompt carries a counter so nothing is cached.
  Calls alternate gateway / direct, so drift hits both equally.
- Added latency = median(gateway) − median(direct), and the median of the paired differences.
  The target is ≤ 1 ms median added. The gateway's own ``x-talkgate-overhead-ms`` header (its
  wall time minus the time spent waiting on the upstream, up to the response start) is shown
  beside it: it excludes the extra process hop's scheduling, which dominates on a busy VM.
- The gateway's CPU per call: the run time of all its threads (``/proc/<pid>/task/*/schedstat``,
  nanoseconds) from just before to just after each of its calls, so its idle background work
  between calls is left out; median over the calls. Less noisy than the latencies on a shared
  machine, and it is what the gateway adds to CPUs that client and simulator share.
- Everything shares one 2-core VM, so client, gateway and simulator compete for the CPUs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from bench.processes import SIM_CODE, gateway_code, gateway_env, start, stop
from tests.servers import free_port

KEY = "sk-bench-front-door"
PROMPT = "Please summarise our refund policy for order number {n:08d} in two sentences."


def _wait(url: str, log: Path, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer:\n{log.read_text(errors='replace')[-3000:]}")


def _overhead(response: object) -> float | None:
    """The gateway's own ``x-talkgate-overhead-ms`` (its time minus the upstream's), if present."""
    value = (getattr(response, "headers", None) or {}).get("x-talkgate-overhead-ms")
    return float(value) if value is not None else None


def _plain(n: int) -> float | None:
    from dashscope import Generation

    r = Generation.call(model="qwen-plus", prompt=PROMPT.format(n=n), api_key=KEY)
    assert r.status_code == 200, r
    return _overhead(r)


def _streamed(n: int) -> float | None:
    from dashscope import Generation

    chunks = list(
        Generation.call(
            model="qwen-plus", prompt=PROMPT.format(n=n), api_key=KEY, stream=True, incremental_output=True
        )
    )
    assert chunks and chunks[-1].status_code == 200, chunks[-1]
    return _overhead(chunks[0])


def _measure(
    call: Callable[[int], float | None], bases: dict[str, str], rounds: int, warmup: int, gateway_pid: int
) -> tuple[dict[str, list[float]], list[float], float]:
    """Wall times per target (ms), the gateway's self-reported overheads, and its CPU per call (ms)."""
    import dashscope

    times: dict[str, list[float]] = {name: [] for name in bases}
    reported: list[float] = []
    cpu: list[float] = []
    counter = 0
    for i in range(warmup + rounds):
        for name, base in bases.items():
            dashscope.base_http_api_url = base
            counter += 1
            cpu_before = cpu_ns(gateway_pid) if name == "gateway" else 0
            t0 = time.perf_counter()
            overhead = call(counter)
            elapsed = (time.perf_counter() - t0) * 1000.0
            if i >= warmup:
                times[name].append(elapsed)
                if name == "gateway":
                    cpu.append((cpu_ns(gateway_pid) - cpu_before) / 1e6)
                if overhead is not None:
                    reported.append(overhead)
    return times, reported, statistics.median(cpu)


def cpu_ns(pid: int) -> int:
    """CPU time of all threads of ``pid`` so far, in nanoseconds (Linux schedstat)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue  # a thread that ended meanwhile
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 rounds instead of 1,000")
    args = parser.parse_args()
    rounds, warmup = (200, 30) if args.quick else (1000, 100)
    sim_port, gw_port = free_port(), free_port()
    procs = []
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp)
        try:
            procs.append(start(SIM_CODE.format(key=KEY, port=sim_port), {}, log / "sim.log"))
            env = {**gateway_env(sim_port, KEY, log / "data"), "TALKGATE_CACHE__ENABLED": "false"}
            procs.append(start(gateway_code(gw_port), env, log / "gw.log"))
            _wait(f"http://127.0.0.1:{sim_port}/sim/health", log / "sim.log")
            _wait(f"http://127.0.0.1:{gw_port}/healthz", log / "gw.log")
            bases = {
                "gateway": f"http://127.0.0.1:{gw_port}/api/v1",
                "direct": f"http://127.0.0.1:{sim_port}/api/v1",
            }
            print(__doc__)
            print(f"rounds: {rounds} per target and mode (after {warmup} warm-up rounds)\n")
            print(
                "| mode | direct median ms | gateway median ms | added (median − median) "
                "| added (median of pairs) | gateway's own x-talkgate-overhead-ms, median "
                "| gateway CPU per call, median |"
            )
            print("|---|---|---|---|---|---|---|")
            for mode, call in (("plain", _plain), ("streamed", _streamed)):
                times, reported, cpu_ms = _measure(call, bases, rounds, warmup, procs[1].pid)
                direct, gateway = statistics.median(times["direct"]), statistics.median(times["gateway"])
                pairs = statistics.median(
                    g - d for g, d in zip(times["gateway"], times["direct"], strict=True)
                )
                own = f"{statistics.median(reported):.3f} ms" if reported else "n/a"
                print(
                    f"| {mode} | {direct:.3f} | {gateway:.3f} | {gateway - direct:+.3f} ms "
                    f"| {pairs:+.3f} ms | {own} | {cpu_ms:.3f} ms |"
                )
            print(f"\nload average after the run: {os.getloadavg()}")
        finally:
            stop(procs)


if __name__ == "__main__":
    main()
