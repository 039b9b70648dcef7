"""Prometheus metrics of realtime sessions, on the gateway's registry (gateway/metrics.py).

The stage histogram follows one spoken turn: ``asr`` (end of speech → final transcript),
``llm_first_token`` and ``tts_first_audio`` (from the response's start), ``first_audio``
(end of speech → first audio delta sent: what the person waits for).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_STAGE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0)


class RealtimeMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.active = Gauge(
            "talkgate_realtime_sessions_active", "Realtime sessions open now.", registry=registry
        )
        self.sessions = Counter(
            "talkgate_realtime_sessions",
            "Realtime sessions by how they ended (closed, refused, timed_out, limit).",
            ["outcome"],
            registry=registry,
        )
        self.turns = Counter(
            "talkgate_realtime_turns",
            "Realtime responses by final status and the backend that answered (cloud, local, mixed).",
            ["status", "backend"],
            registry=registry,
        )
        self.stage_seconds = Histogram(
            "talkgate_realtime_stage_seconds",
            "Latency of the stages of a spoken turn.",
            ["stage"],
            buckets=_STAGE_BUCKETS,
            registry=registry,
        )
        self.barge_ins = Counter(
            "talkgate_realtime_barge_ins", "Responses cancelled by the user speaking.", registry=registry
        )
        self.early_transcripts = Counter(
            "talkgate_realtime_early_transcripts",
            "Early (speculative) whole-utterance transcriptions started in the closing silence, "
            "by outcome: used for the turn, or discarded because the speech went on.",
            ["outcome"],
            registry=registry,
        )
        self.fallbacks = Counter(
            "talkgate_realtime_fallbacks",
            "Realtime responses answered by a fallback target.",
            registry=registry,
        )

    def turn(self, status: str, backend: str, fallback: bool, stages: dict[str, float]) -> None:
        self.turns.labels(status, backend).inc()
        if fallback:
            self.fallbacks.inc()
        for stage, seconds in stages.items():
            self.stage_seconds.labels(stage).observe(seconds)
