"""What the process boundary costs: local engines in their worker process vs in this process.

    .venv/bin/python -m bench.local_workers [--runs N]

Method: the same model files and settings are loaded twice: once in this process (the
engine class the worker runs, called on a thread, as round 1's thread pool did) and once
through the provider (its worker process: socket pair, pickled messages, a reader thread
handing items to the event loop). Both are warmed up, then measured interleaved (in-process,
worker, in-process, worker, ...) so background load hits both alike; each figure is the
median of N runs. Figures:
- chat time to first token: a streamed call, until the first content chunk arrives here;
- chat whole answer: a non-streamed call with 128 completion tokens, greedy (same tokens
  every run), wall time and tokens/s;
- TTS: a ~11 s paragraph, whole (wall time) and streamed (first sentence);
- round trip: one call of an engine that does nothing (the fixed cost per call).
Target (issue 17): at most 5 ms added to the first token and 5 % to throughput. Nothing is
asserted; the figures go to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from gateway.settings import Settings
from providers.base import ChatRequest, SynthesizeRequest
from providers.local import build_local_providers
from providers.local.llama_engine import LlamaEngine
from providers.local.piper_engine import PiperEngine
from providers.local.workers.ipc import LoadSpec
from providers.local.workers.supervisor import RestartPolicy, WorkerStats, WorkerSupervisor

PARAGRAPH = (
    "Thank you for calling customer service. Your order was shipped this morning and should "
    "arrive within three business days. If anything is missing, reply to this message and we "
    "will send a replacement at no extra cost."
)
PROMPT = [{"role": "user", "content": "Write a long story about a robot who learns to paint."}]
NEVER = threading.Event()


async def first_and_total_in_thread(make: Callable[[], Iterator[Any]]) -> tuple[float, float]:
    """Drive a blocking iterator on a thread; seconds to its first item and to its end, seen here."""
    loop = asyncio.get_running_loop()
    first: asyncio.Future[float] = loop.create_future()
    start = time.perf_counter()

    def run() -> None:
        for _ in make():
            if not first.done():
                loop.call_soon_threadsafe(lambda: first.done() or first.set_result(time.perf_counter()))

    await asyncio.to_thread(run)
    end = time.perf_counter()
    return (await first) - start, end - start


async def first_and_total(stream: Any) -> tuple[float, float]:
    start = time.perf_counter()
    first = None
    async for _ in stream:
        first = first or time.perf_counter()
    return (first or time.perf_counter()) - start, time.perf_counter() - start


def median_ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.1f} ms"


async def main(runs: int) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="talkgate-bench-"))
    settings = Settings(data_dir=data_dir, max_tokens_ceiling=128)
    chat, _, tts = build_local_providers(settings)
    llm_cfg, tts_cfg = settings.local.llm["smollm2"], settings.local.tts["piper-joe"]
    in_llm = LlamaEngine(LoadSpec("", "smollm2", llm_cfg, chat._locate("smollm2", llm_cfg)))
    in_tts = PiperEngine(LoadSpec("", "piper-joe", tts_cfg, tts._locate("piper-joe", tts_cfg)))
    await chat.preload()
    await tts.preload()
    tts_info = await tts.model("piper-joe")
    job = {"max_tokens": 128, "stop": [], "sampling": {"temperature": 0.0}}
    request = ChatRequest(model="smollm2", messages=PROMPT, temperature=0.0, max_tokens=128)
    speech = SynthesizeRequest(model="piper-joe", text=PARAGRAPH, voice="joe")
    tts_job = {"text": PARAGRAPH, "speaker_id": None, "length_scale": tts_info["length_scale"],
               "sample_rate": tts_info["sample_rate"]}  # fmt: skip
    echo = WorkerSupervisor(
        LoadSpec("tests.providers.local.workers.echo_engine:EchoEngine", "echo", llm_cfg, None),
        label="echo",
        policy=RestartPolicy(),
        stats=WorkerStats("echo", "echo"),
    )

    fig: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        fig.setdefault(name, []).append(value)

    for round_ in range(runs + 1):  # round 0 warms both sides up
        keep = round_ > 0
        ttft, _ = await first_and_total_in_thread(lambda: in_llm.stream(PROMPT, job, cancelled=NEVER))
        keep and add("ttft in", ttft)
        ttft, _ = await first_and_total(chat.chat_stream(request))
        keep and add("ttft worker", ttft)
        start = time.perf_counter()
        result = await asyncio.to_thread(in_llm.complete, PROMPT, job, cancelled=NEVER)
        keep and add("answer in", time.perf_counter() - start)
        tokens = result.usage.completion_tokens
        start = time.perf_counter()
        result = await chat.chat(request)
        keep and add("answer worker", time.perf_counter() - start)
        assert result.usage.completion_tokens == tokens
        start = time.perf_counter()
        await asyncio.to_thread(in_tts.synthesize_all, tts_job, cancelled=NEVER)
        keep and add("tts in", time.perf_counter() - start)
        start = time.perf_counter()
        await tts.synthesize(speech)
        keep and add("tts worker", time.perf_counter() - start)
        first, _ = await first_and_total_in_thread(lambda: in_tts.synthesize(tts_job, cancelled=NEVER))
        keep and add("tts first in", first)
        first, _ = await first_and_total(tts.synthesize_stream(speech))
        keep and add("tts first worker", first)
        for _ in range(50):
            start = time.perf_counter()
            await echo.call("echo", b"x" * 64)
            keep and add("round trip", time.perf_counter() - start)

    load = os.getloadavg()
    print(f"# local workers bench — {platform.machine()}, {os.cpu_count()} CPUs, runs={runs}, "
          f"load avg {load[0]:.2f}")  # fmt: skip
    print(f"method: interleaved in-process vs worker process, median of {runs}; see module docstring")
    rows = [
        ("chat time to first token", "ttft"),
        (f"chat whole answer ({tokens} tokens)", "answer"),
        ("TTS whole paragraph", "tts"),
        ("TTS first streamed sentence", "tts first"),
    ]
    print("| figure | in-process | worker process | added |")
    print("|---|---|---|---|")
    for label, key in rows:
        a, b = statistics.median(fig[f"{key} in"]), statistics.median(fig[f"{key} worker"])
        print(
            f"| {label} | {a * 1000:.1f} ms | {b * 1000:.1f} ms | {(b - a) * 1000:+.1f} ms ({(b / a - 1) * 100:+.1f} %) |"
        )
    a, b = statistics.median(fig["answer in"]), statistics.median(fig["answer worker"])
    print(
        f"| chat throughput | {tokens / a:.1f} tok/s | {tokens / b:.1f} tok/s | {(a / b - 1) * 100:+.1f} % |"
    )
    print(f"| round trip of an empty call | — | {median_ms(fig['round trip'])} | — |")
    for provider in (chat, tts):
        await provider.unload()
    await asyncio.to_thread(echo.stop)
    chat.pool.shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="3 runs")
    args = parser.parse_args()
    asyncio.run(main(3 if args.quick else args.runs))
