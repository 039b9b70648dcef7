"""What observability costs per request: metrics recording, experiment assignment, a scrape.

Run: ``.venv/bin/python -m bench.metrics_overhead``

Method (printed with the figures): in-process, no HTTP. ``observe_request`` is what the request
middleware calls once per response (counters, four histograms, per-key counter, cache/usage
volumes), timed over 200,000 calls spread over 12 routes × 8 providers × 3 statuses, so label
lookups hit a realistic number of series; ``Experiments.apply`` is the per-request A/B
assignment (SHA-256 of experiment + user) on a running experiment; ``render`` is one /metrics
body after that traffic. Figures are medians of 7 repetitions.
"""

from __future__ import annotations

import itertools
import statistics
import tempfile
import time
from pathlib import Path

from gateway.context import RequestContext
from gateway.metrics import Metrics
from gateway.settings import Settings
from policies.experiments import Experiments
from providers.base import ChatRequest

CALLS = 200_000


def _median_us(fn: object, calls: int, reps: int = 7) -> float:
    runs = []
    for _ in range(reps):
        started = time.perf_counter()
        fn(calls)  # type: ignore[operator]
        runs.append((time.perf_counter() - started) / calls * 1e6)
    return statistics.median(runs)


def main() -> None:
    metrics = Metrics()
    routes = [f"/v1/route{i}" for i in range(12)]
    providers = [f"bailian:model-{i}" for i in range(8)]
    contexts = []
    for i, (route, provider, status) in enumerate(itertools.product(routes, providers, (200, 429, 502))):
        ctx = RequestContext(
            request_id=str(i), provider=provider, upstream_s=0.02, cache="miss", key_id=f"k{i % 50}"
        )
        ctx.extra["usage"] = {"tokens_in": 12, "tokens_out": 30}
        contexts.append((route, status, ctx))

    def observe(n: int) -> None:
        for route, status, ctx in itertools.islice(itertools.cycle(contexts), n):
            metrics.observe_request(route, status, ctx, 0.05, 0.0004, 0.03)

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            data_dir=Path(tmp),
            experiments={
                "ab": {
                    "capability": "chat",
                    "variants": [
                        {"name": "a", "percent": 50},
                        {"name": "b", "percent": 50, "model": "qwen-turbo"},
                    ],
                }
            },
        )
        experiments = Experiments(settings)
        request = ChatRequest(model="default", messages=[{"role": "user", "content": "hi"}])
        users = [RequestContext(request_id="r", user=f"user-{i}") for i in range(1000)]

        def assign(n: int) -> None:
            for ctx in itertools.islice(itertools.cycle(users), n):
                experiments.apply("chat", ctx, request)

        observe_us = _median_us(observe, CALLS)
        assign_us = _median_us(assign, 50_000)
    render_runs = []
    for _ in range(7):
        started = time.perf_counter()
        body = metrics.render()
        render_runs.append(time.perf_counter() - started)
    print("Method:", __doc__.split("figures):", 1)[1].strip())
    print()
    print(f"observe_request per response: {observe_us:.1f} µs ({len(contexts)} label combinations)")
    print(f"Experiments.apply per request: {assign_us:.1f} µs")
    print(f"/metrics render: {statistics.median(render_runs) * 1000:.1f} ms for {len(body) / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
