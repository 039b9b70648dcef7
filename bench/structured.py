"""Tools and structured output: what a streamed tool call costs in the gateway, and what a grammar
costs the local model.

    .venv/bin/python -m bench.structured [--requests 1500] [--quick]

(a) Gateway share of a streamed tool call vs a streamed text answer. The simulator (zero latency)
and the gateway run as separate uvicorn + uvloop + httptools processes. One client sends, in
turn, the same streamed chat request through the gateway (OpenAI wire) and straight to the
simulator's native endpoint (DashScope wire), once as a text question and once with a tool that
the simulator calls (``tool_choice: required``). Each request's time is taken to the stream's last
byte; "added" is gateway minus direct, median over ``--requests`` rounds after 200 warm-up rounds.
The target (issue 19): the added time of a tool call within 0.2 ms of a text answer's. A tool
call is collected and checked before it is sent (gateway/structured/answers.py), so it is
timed to the last byte, like the text.

(b) Local decoding with a grammar: SmolLM2 in this process (the worker's engine class), at most
128 completion tokens at temperature 0, without a grammar, with a JSON Schema, and with two
tools and ``tool_choice: required``; completion tokens per second of wall time (prompt
processing included, so short answers read lower; a schema answer that SmolLM2 keeps going
until the budget is cut there and counted as decoded); median of ``--runs``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import tempfile
import threading
import time
from pathlib import Path

import aiohttp

from bench.processes import SIM_CODE, gateway_code, gateway_env, start, stop
from providers.base import ProviderError
from tests.servers import free_port

KEY = "sk-bench-tools"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TICKET = {
    "type": "function",
    "function": {
        "name": "open_ticket",
        "description": "Open a support ticket",
        "parameters": {
            "type": "object",
            "properties": {"summary": {"type": "string"}},
            "required": ["summary"],
        },
    },
}
ASK = [{"role": "user", "content": "What is the weather in city Hangzhou?"}]


async def timed_stream(session: aiohttp.ClientSession, url: str, body: dict, headers: dict) -> float:
    start_t = time.perf_counter()
    async with session.post(url, json=body, headers=headers) as r:
        async for _ in r.content.iter_any():
            pass
        if r.status != 200:
            raise RuntimeError(f"{url}: {r.status}")
    return (time.perf_counter() - start_t) * 1000


async def gateway_share(requests: int) -> dict[str, list[float]]:
    sim_port, gw_port = free_port(), free_port()
    tmp = Path(tempfile.mkdtemp(prefix="tg-bench-tools-"))
    procs = [
        start(SIM_CODE.format(key=KEY, port=sim_port), {}, tmp / "sim.log"),
        start(gateway_code(gw_port), gateway_env(sim_port, KEY, tmp / "data"), tmp / "gw.log"),
    ]
    gateway = f"http://127.0.0.1:{gw_port}/v1/chat/completions"
    native = f"http://127.0.0.1:{sim_port}/api/v1/services/aigc/text-generation/generation"
    sse = {"authorization": f"Bearer {KEY}", "x-dashscope-sse": "enable", "accept": "text/event-stream"}
    cases = {
        "text": ({"model": "qwen-plus", "messages": ASK, "stream": True}, {}),
        "tool": (
            {
                "model": "qwen-plus",
                "messages": ASK,
                "stream": True,
                "tools": [WEATHER, TICKET],
                "tool_choice": "required",
            },
            {"tools": [WEATHER, TICKET], "tool_choice": "required"},
        ),
    }
    times: dict[str, list[float]] = {f"{c} {w}": [] for c in cases for w in ("gateway", "direct")}
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(300):
                try:
                    async with session.get(f"http://127.0.0.1:{gw_port}/healthz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            for i in range(200 + requests):
                for case, (openai_body, native_extra) in cases.items():
                    native_body = {
                        "model": "qwen-plus",
                        "input": {"messages": ASK},
                        "parameters": {
                            "result_format": "message",
                            "incremental_output": True,
                            **native_extra,
                        },
                    }
                    g = await timed_stream(session, gateway, openai_body, {})
                    d = await timed_stream(session, native, native_body, sse)
                    if i >= 200:
                        times[f"{case} gateway"].append(g)
                        times[f"{case} direct"].append(d)
    finally:
        stop(procs)
    return times


def local_speed(runs: int) -> dict[str, tuple[list[float], list[int]]]:
    from gateway.settings import Settings
    from providers.base import ChatRequest
    from providers.local import build_local_providers
    from providers.local.llama_engine import LlamaEngine
    from providers.local.llama_structured import plan
    from providers.local.workers.ipc import LoadSpec

    settings = Settings(data_dir=Path(tempfile.mkdtemp()), max_tokens_ceiling=128)
    chat, _, _ = build_local_providers(settings)
    config = settings.local.llm["smollm2"]
    engine = LlamaEngine(LoadSpec("", "smollm2", config, chat._locate("smollm2", config)))
    story = [{"role": "user", "content": "Describe a customer order in detail."}]
    schema = {
        "type": "json_schema",
        "json_schema": {
            "name": "order",
            "schema": {
                "type": "object",
                "properties": {
                    "id": {"type": "string"},
                    "items": {"type": "array", "items": {"type": "string"}},
                },
                "required": ["id", "items"],
            },
        },
    }
    variants = {
        "no grammar": ChatRequest(model="smollm2", messages=story, temperature=0, max_tokens=128),
        "json_schema": ChatRequest(
            model="smollm2", messages=story, temperature=0, max_tokens=128, response_format=schema
        ),
        "2 tools, required": ChatRequest(
            model="smollm2",
            messages=ASK,
            temperature=0,
            max_tokens=128,
            tools=[WEATHER, TICKET],
            tool_choice="required",
        ),
    }
    never = threading.Event()
    speeds: dict[str, list[float]] = {name: [] for name in variants}
    lengths: dict[str, list[int]] = {name: [] for name in variants}
    for round_ in range(runs + 1):
        for name, request in variants.items():
            job = {
                "max_tokens": 128,
                "stop": [],
                "sampling": {"temperature": 0.0},
                "structured": plan(request),
            }
            t = time.perf_counter()
            try:
                result = engine.complete(request.messages, job, cancelled=never)
            except ProviderError as exc:  # a structured answer cut at max_tokens: still decoded
                cut = re.search(r"\((\d+) tokens\)", exc.message)
                if cut is None:
                    raise
                tokens = int(cut.group(1))
            else:
                tokens = result.usage.completion_tokens
            if round_ and tokens:
                speeds[name].append(tokens / (time.perf_counter() - t))
                lengths[name].append(tokens)
    return {name: (speeds[name], lengths[name]) for name in variants}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1500)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="300 requests, 2 runs")
    args = parser.parse_args()
    requests, runs = (300, 2) if args.quick else (args.requests, args.runs)
    print(f"# structured bench — {os.cpu_count()} CPUs, load avg {os.getloadavg()[0]:.2f}")
    times = asyncio.run(gateway_share(requests))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"(a) streamed, to the last byte, median of {requests}:")
    for case in ("text", "tool"):
        added = med[f"{case} gateway"] - med[f"{case} direct"]
        print(
            f"  {case}: gateway {med[f'{case} gateway']:.3f} ms, direct {med[f'{case} direct']:.3f} ms, added {added:+.3f} ms"
        )
    gap = (med["tool gateway"] - med["tool direct"]) - (med["text gateway"] - med["text direct"])
    print(f"  tool call added minus text added: {gap:+.3f} ms (target: within 0.2 ms)")
    print(f"(b) local SmolLM2, 128-token budget, tokens/s (and tokens) per answer, median of {runs}:")
    for name, (values, lengths) in local_speed(runs).items():
        if values:
            print(
                f"  {name}: {statistics.median(values):.1f} tokens/s ({statistics.median(lengths):.0f} tokens)"
            )
        else:
            print(f"  {name}: no complete answer")


if __name__ == "__main__":
    main()
