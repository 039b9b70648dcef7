"""Scrape-time families (gateway/metrics_collectors.py): a failing probe never breaks /metrics."""

from __future__ import annotations

import sys

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from gateway.metrics_collectors import ScrapeCollector, inflight_family, torch_module_probe


def test_failing_probes_and_collectors_are_skipped_not_fatal() -> None:
    collector = ScrapeCollector()
    registry = CollectorRegistry()
    registry.register(collector)

    def broken_probe() -> dict[str, float]:
        raise RuntimeError("driver gone")

    def broken_collector() -> list[object]:
        raise RuntimeError("state gone")

    collector.gpu_probes["broken"] = broken_probe
    collector.gpu_probes["renderer"] = lambda: {"cuda:1": 2048.0}
    collector.extra.append(broken_collector)
    collector.extra.append(lambda: [inflight_family([("chat", "local", 3), ("tts", "bailian", 0)])])
    body = generate_latest(registry).decode()
    assert 'talkgate_gpu_module_memory_bytes{device="cuda:1",module="renderer"} 2048.0' in body
    assert 'module="broken"' not in body
    assert 'talkgate_provider_inflight{capability="chat",provider="local"} 3.0' in body
    assert 'talkgate_provider_inflight{capability="tts",provider="bailian"} 0.0' in body


def test_torch_probe_reports_nothing_without_initialised_cuda() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        pytest.skip("CUDA is in use in this process: the probe rightly reports it")
    assert torch_module_probe()() == {}  # and it never imports torch itself
