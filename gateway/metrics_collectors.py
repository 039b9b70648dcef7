"""Scrape-time metric families: GPU memory (device and per module) and extra collectors.

Split from ``gateway.metrics`` because these are computed when Prometheus scrapes, not recorded
on the request path: they query NVML/torch and call module probes, so each is guarded so that a
failing probe never breaks a scrape.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

log = logging.getLogger("talkgate.metrics")

#: ``probe()`` -> {device: bytes} held by one gateway module.
GpuProbe = Callable[[], dict[str, float]]


class ScrapeCollector:
    """A registry collector yielding GPU memory families and whatever modules added."""

    def __init__(self) -> None:
        self.gpu_probes: dict[str, GpuProbe] = {}
        self.extra: list[Callable[[], Iterable[Metric]]] = []

    def describe(self) -> list[Metric]:
        return []  # dynamic: skip registry-time name checks

    def collect(self) -> Iterable[Metric]:
        yield from gpu_families(self.gpu_probes)
        for extra in list(self.extra):
            try:
                yield from extra()
            except Exception:
                log.debug("metrics collector failed", exc_info=True)


def gpu_families(probes: dict[str, GpuProbe]) -> list[Metric]:
    """Device-wide used/total memory plus each registered module's own share."""
    used = GaugeMetricFamily(
        "talkgate_gpu_memory_used_bytes", "GPU memory in use per device.", labels=["device"]
    )
    total = GaugeMetricFamily("talkgate_gpu_memory_total_bytes", "GPU memory per device.", labels=["device"])
    per_module = GaugeMetricFamily(
        "talkgate_gpu_module_memory_bytes",
        "GPU memory held by a gateway module.",
        labels=["module", "device"],
    )
    for device, (u, t) in _gpu_devices().items():
        used.add_metric([device], u)
        total.add_metric([device], t)
    for module, probe in list(probes.items()):
        try:
            for device, value in probe().items():
                per_module.add_metric([module, device], float(value))
        except Exception:  # a probe must never break a scrape
            log.debug("gpu probe %s failed", module, exc_info=True)
    return [used, total, per_module]


def _gpu_devices() -> dict[str, tuple[float, float]]:
    """{device: (used, total)} from NVML when importable, else from torch if it is already loaded.

    torch is never imported here (seconds of start-up); a module that uses CUDA has imported it.
    """
    out: dict[str, tuple[float, float]] = {}
    nvml = _nvml()
    if nvml is not None:
        try:
            for i in range(nvml.nvmlDeviceGetCount()):
                info = nvml.nvmlDeviceGetMemoryInfo(nvml.nvmlDeviceGetHandleByIndex(i))
                out[f"cuda:{i}"] = (float(info.used), float(info.total))
            return out
        except Exception:
            log.debug("NVML memory query failed", exc_info=True)
    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
            for i in range(torch.cuda.device_count()):
                free, total = torch.cuda.mem_get_info(i)
                out[f"cuda:{i}"] = (float(total - free), float(total))
    except Exception:
        log.debug("torch.cuda memory query failed", exc_info=True)
    return out


_nvml_state: dict[str, Any] = {}


def _nvml() -> Any | None:
    """The initialised ``pynvml`` module (package nvidia-ml-py), or None; tried once per process."""
    if "module" not in _nvml_state:
        try:
            import pynvml  # type: ignore[import-not-found]

            pynvml.nvmlInit()
            _nvml_state["module"] = pynvml
        except Exception:
            _nvml_state["module"] = None
    return _nvml_state["module"]


def inflight_family(rows: Iterable[tuple[str, str, int]]) -> Metric:
    """``talkgate_provider_inflight{capability, provider}`` from (capability, provider, count) rows."""
    family = GaugeMetricFamily(
        "talkgate_provider_inflight",
        "Calls in flight per provider instance.",
        labels=["capability", "provider"],
    )
    for cap, name, count in rows:
        family.add_metric([cap, name], count)
    return family


def worker_families(stats: Iterable[Any]) -> list[Metric]:
    """Local engine worker processes per (engine, model): starts, restarts, crashes, up, unhealthy.

    ``stats`` are ``providers.local.workers.supervisor.WorkerStats``; the counters live in the
    local model pool, so they keep counting across hot swaps.
    """
    labels = ["engine", "model"]
    starts = CounterMetricFamily(
        "talkgate_local_worker_starts", "Engine worker processes started.", labels=labels
    )
    restarts = CounterMetricFamily(
        "talkgate_local_worker_restarts",
        "Engine workers started again after one stopped or died.",
        labels=labels,
    )
    crashes = CounterMetricFamily(
        "talkgate_local_worker_crashes",
        "Engine workers that died unexpectedly (segfault, abort, OOM kill, hung call killed).",
        labels=labels,
    )
    up = GaugeMetricFamily(
        "talkgate_local_worker_up", "1 while the model's worker is running.", labels=labels
    )
    unhealthy = GaugeMetricFamily(
        "talkgate_local_worker_unhealthy",
        "1 while the model crashed too often in the crash window (see /readyz).",
        labels=labels,
    )
    for row in stats:
        key = [row.engine, row.model]
        starts.add_metric(key, row.starts)
        restarts.add_metric(key, row.restarts)
        crashes.add_metric(key, row.crashes)
        up.add_metric(key, row.up)
        unhealthy.add_metric(key, 1 if row.unhealthy else 0)
    return [starts, restarts, crashes, up, unhealthy]
