"""Per-variant request statistics for the experiments admin API.

Kept per process, with a bounded window of recent latencies for percentiles; Prometheus gets the
same requests through the ``variant`` label, which aggregates across replicas.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any


@dataclass
class VariantStats:
    """Counts and recent latencies of one ``experiment:variant`` label."""

    requests: int = 0
    errors: int = 0  # 5xx
    client_errors: int = 0  # 4xx
    latency_sum: float = 0.0
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=2048))

    def report(self) -> dict[str, Any]:
        """The admin API's view: counts, error rate, mean / p50 / p95 latency in ms."""
        ordered = sorted(self.recent)

        def pct(p: float) -> float | None:
            return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000, 3) if ordered else None

        return {
            "requests": self.requests,
            "errors": self.errors,
            "client_errors": self.client_errors,
            "error_rate": round(self.errors / self.requests, 6) if self.requests else 0.0,
            "latency_ms": {
                "mean": round(self.latency_sum / self.requests * 1000, 3) if self.requests else None,
                "p50": pct(0.5),
                "p95": pct(0.95),
            },
        }
