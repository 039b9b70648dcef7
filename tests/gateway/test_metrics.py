"""/metrics after real traffic (gateway -> simulator), and every name the dashboard and alerts use."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from gateway.app import create_app
from gateway.metrics import Metrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
#: Series Prometheus makes itself rather than scraping them.
PROMETHEUS_SYNTHETIC = {"up"}
_PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset",
    "inf", "nan",
}  # fmt: skip


def promql_metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, labels or keywords."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors and subqueries
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for m in re.finditer(r"(?<![\w$.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", expr):
        name, call = m.group(1), m.group(2)
        if call or name.lower() in _PROMQL_WORDS:
            continue
        names.add(name)
    return names


def dashboard_queries() -> list[str]:
    dash = json.loads((DEPLOY / "grafana/dashboards/talkgate.json").read_text())
    exprs = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            exprs.extend(t["expr"] for t in panel.get("targets", ()) if t.get("expr"))
            walk(panel.get("panels", []))

    walk(dash["panels"])
    return exprs


def alert_queries() -> list[str]:
    rules = yaml.safe_load((DEPLOY / "prometheus/alerts.yml").read_text())
    return [r["expr"] for g in rules["groups"] for r in g["rules"]]


def exported(text: str) -> tuple[set[str], dict[str, str], dict[str, float]]:
    """(sample names, {family: type} from TYPE lines, {sample line key: value})."""
    samples: dict[str, float] = {}
    types: dict[str, str] = {}
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            types[name] = kind
        elif line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            samples[key] = float(value)
            names.add(re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", key).group(0))
    return names, types, samples


def is_exported(name: str, names: set[str], types: dict[str, str]) -> bool:
    if name in names or name in types:
        return True
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_sum", "_count"),
        "summary": ("_sum", "_count"),
    }
    return any(any(name == family + s for s in suffixes.get(kind, ())) for family, kind in types.items())


def value(samples: dict[str, float], name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for key, v in samples.items():
        if key.split("{", 1)[0] != name:
            continue
        if all(f'{k}="{val}"' in key for k, val in labels.items()):
            total += v
    return total


def test_promql_name_parser() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, route) (rate(talkgate_x_bucket{route=~"/v1/.*"}[$__rate_interval])))'
        " / clamp_min(sum(rate(process_cpu_seconds_total[5m])), 1e-9) > 0.9 and on (job) up == 0"
    )
    assert promql_metric_names(expr) == {"talkgate_x_bucket", "process_cpu_seconds_total", "up"}


@pytest.fixture
def traffic_scrape(gateway_settings: Any, run_gateway: Any, sim: Any) -> str:
    """A gateway after chat (plain, streamed, with a fallback), speech and transcription traffic."""
    settings = gateway_settings(
        retry={"attempts": 2, "base_delay_s": 0.01, "max_delay_s": 0.02},
        breaker={"consecutive_failures": 2, "cooldown_s": 60, "max_cooldown_s": 60},
    )
    gw = run_gateway(settings)
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="unused", max_retries=0)
    messages = [{"role": "user", "content": "Hello there"}]
    for _ in range(3):
        client.chat.completions.create(model="default", messages=messages)
    for _ in range(2):
        stream = client.chat.completions.create(model="default", messages=messages, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    speech = client.audio.speech.create(
        model="tts-1", voice="alloy", input="Good morning.", response_format="wav"
    )
    text = client.audio.transcriptions.create(model="whisper-1", file=("hello.wav", speech.content))
    assert isinstance(text.text, str)
    # qwen-plus fails on every attempt: retries, then a fallback to qwen-turbo; its breaker opens.
    sim.fault(service="generation", model="qwen-plus", status=500, times=50)
    for _ in range(3):
        raw = client.chat.completions.with_raw_response.create(model="default", messages=messages)
        assert raw.headers["x-talkgate-provider"] == "bailian:qwen-turbo"
    bad = httpx.post(
        f"{gw.url}/v1/chat/completions", json={"model": "nope", "messages": messages}, timeout=10
    )
    assert bad.status_code == 404 and bad.json()["error"]["code"] == "model_not_found"
    time.sleep(0.2)  # the last request is booked just after its response went out
    r = httpx.get(f"{gw.url}/metrics", timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return r.text


def test_metrics_after_real_traffic(traffic_scrape: str) -> None:
    _names, types, samples = exported(traffic_scrape)
    chat = "/v1/chat/completions"
    assert (
        value(
            samples,
            "talkgate_requests_total",
            route=chat,
            status="200",
            provider="bailian",
            model="qwen-plus",
        )
        == 5
    )
    assert value(samples, "talkgate_requests_total", route=chat, status="200", model="qwen-turbo") == 3
    assert value(samples, "talkgate_requests_total", route="/v1/audio/speech", status="200") == 1
    assert value(samples, "talkgate_requests_total", route="/v1/audio/transcriptions", status="200") == 1
    assert value(samples, "talkgate_requests_total", route=chat, status="404") == 1
    assert value(samples, "talkgate_request_duration_seconds_count", route=chat) == 9
    assert value(samples, "talkgate_time_to_first_byte_seconds_count", route=chat) == 9
    assert value(samples, "talkgate_gateway_overhead_seconds_count", route=chat) == 9
    assert value(samples, "talkgate_request_upstream_seconds_count", route=chat) >= 8
    assert (
        value(
            samples,
            "talkgate_fallbacks_total",
            from_target="bailian:qwen-plus",
            to_target="bailian:qwen-turbo",
        )
        >= 1
    )
    assert value(samples, "talkgate_retries_total", target="bailian:qwen-plus") >= 1
    assert (
        value(samples, "talkgate_upstream_attempts_total", target="bailian:qwen-plus", outcome="error") >= 2
    )
    assert value(samples, "talkgate_breaker_state", target="bailian:qwen-plus") == 2  # open
    assert value(samples, "talkgate_breaker_state", target="bailian:qwen-turbo") == 0
    assert value(samples, "talkgate_key_requests_total", key_id="anonymous") >= 10
    # Volumes come from the usage row each route records (gateway.usage.record).
    assert (
        value(samples, "talkgate_tokens_total", provider="bailian", model="qwen-plus", kind="completion") > 0
    )
    assert value(samples, "talkgate_tokens_total", model="qwen-turbo", kind="prompt") > 0
    assert value(samples, "talkgate_tts_characters_total", provider="bailian") == len("Good morning.")
    assert value(samples, "talkgate_audio_seconds_total", capability="asr", provider="bailian") > 0.3
    assert value(samples, "process_resident_memory_bytes") > 10_000_000
    assert value(samples, "process_cpu_seconds_total") > 0
    # GPU families are declared everywhere; on a host without a GPU they carry no samples.
    for family in (
        "talkgate_gpu_memory_used_bytes",
        "talkgate_gpu_memory_total_bytes",
        "talkgate_gpu_module_memory_bytes",
    ):
        assert types[family] == "gauge"


def test_every_dashboard_and_alert_metric_is_exported(traffic_scrape: str) -> None:
    names, types, _samples = exported(traffic_scrape)
    queries = dashboard_queries() + alert_queries()
    assert len(queries) >= 30
    used = set().union(*(promql_metric_names(q) for q in queries)) - PROMETHEUS_SYNTHETIC
    assert len(used) >= 20
    missing = sorted(n for n in used if not is_exported(n, names, types))
    assert missing == [], f"used by dashboards/alerts but not exported: {missing}"
    # The traffic panels have data, not just declarations.
    for name in (
        "talkgate_requests_total",
        "talkgate_request_duration_seconds_bucket",
        "talkgate_time_to_first_byte_seconds_bucket",
        "talkgate_gateway_overhead_seconds_bucket",
        "talkgate_request_upstream_seconds_bucket",
        "talkgate_fallbacks_total",
        "talkgate_retries_total",
        "talkgate_breaker_state",
        "talkgate_key_requests_total",
        "talkgate_upstream_attempts_total",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ):
        assert name in used and name in names, name


def test_pushed_metrics_and_per_app_registries() -> None:
    a, b = Metrics(), Metrics()  # two registries side by side: no duplicate-series error
    a.observe_talk_stage("asr", 0.2)
    a.observe_talk_stage("llm", 0.5)
    a.observe_render(frames=50, seconds=2.0, device="cpu")
    a.rate_limited("acme", "requests")
    a.quota("acme", "tokens", used=95, limit=100)
    a.cache("talk", "hit")
    a.tokens("local:smollm2", 10, 20)
    a.register_gpu_module("lipsync", lambda: {"cuda:0": 1234.0})
    a.on_router_event("breaker", {"target": "bailian:qwen-plus", "state": "half_open"})
    _, _types, samples = exported(a.render().decode())
    assert value(samples, "talkgate_talk_stage_seconds_count", stage="llm") == 1
    assert value(samples, "talkgate_render_fps", device="cpu") == 25
    assert value(samples, "talkgate_render_frames_total", device="cpu") == 50
    assert value(samples, "talkgate_rate_limited_requests_total", tenant="acme") == 1
    assert value(samples, "talkgate_quota_used_ratio", tenant="acme", quota="tokens") == pytest.approx(0.95)
    assert value(samples, "talkgate_cache_requests_total", capability="talk", result="hit") == 1
    assert value(samples, "talkgate_tokens_total", provider="local", model="smollm2", kind="completion") == 20
    assert value(samples, "talkgate_gpu_module_memory_bytes", module="lipsync", device="cuda:0") == 1234
    assert value(samples, "talkgate_breaker_state", target="bailian:qwen-plus") == 1
    _, _, other = exported(b.render().decode())
    assert value(other, "talkgate_render_frames_total") == 0


def test_a_metrics_token_guards_the_scrape(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TALKGATE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("TALKGATE_METRICS_TOKEN", "scrape-secret-0123456789")
    app = create_app()

    async def main() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "Basic c2NyYXBl"}):
                denied = await client.get("/metrics", headers=headers)
                assert denied.status_code == 401
                assert denied.json()["error"]["code"] == "invalid_metrics_token"
                assert denied.headers["www-authenticate"] == "Bearer"
                assert "talkgate_requests_total" not in denied.text
            allowed = await client.get(
                "/metrics", headers={"authorization": "Bearer scrape-secret-0123456789"}
            )
            assert allowed.status_code == 200
            assert "talkgate_requests_total" in allowed.text

    asyncio.run(main())
