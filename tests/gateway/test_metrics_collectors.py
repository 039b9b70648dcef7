"""Scrape-time families (gateway/metrics_collectors.py): a failing probe never breaks /metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from gateway.metrics_collectors import ScrapeCollector, inflight_family, worker_families


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


def test_worker_families_label_by_engine_and_model() -> None:
    from providers.local.workers.supervisor import WorkerStats

    rows = [
        WorkerStats("llama_cpp", "smollm2", starts=3, restarts=2, crashes=2, up=1),
        WorkerStats("torch", "wav2lip", starts=1, unhealthy=True),
    ]
    registry = CollectorRegistry()
    collector = ScrapeCollector()
    registry.register(collector)
    collector.extra.append(lambda: worker_families(rows))
    body = generate_latest(registry).decode()
    assert 'talkgate_local_worker_crashes_total{engine="llama_cpp",model="smollm2"} 2.0' in body
    assert 'talkgate_local_worker_restarts_total{engine="llama_cpp",model="smollm2"} 2.0' in body
    assert 'talkgate_local_worker_starts_total{engine="torch",model="wav2lip"} 1.0' in body
    assert 'talkgate_local_worker_up{engine="llama_cpp",model="smollm2"} 1.0' in body
    assert 'talkgate_local_worker_unhealthy{engine="torch",model="wav2lip"} 1.0' in body
