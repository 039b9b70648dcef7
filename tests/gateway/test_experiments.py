"""A/B experiments: split accuracy, stickiness (requests, restarts), live changes, the admin API."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway.context import RequestContext
from gateway.services import build_services
from gateway.settings import Settings
from policies.experiments import (
    ExperimentConflict,
    ExperimentInvalid,
    Experiments,
    ExperimentSpec,
    bucket,
)
from providers.base import ChatRequest

USERS = [f"user-{i}" for i in range(10_000)]
ADMIN_KEY = "tg-admin-experiments-93ab"
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}


def _settings(tmp_path: Path, **kw: Any) -> Settings:
    return Settings(data_dir=tmp_path / "data", log_json=False, **kw)


def _split(experiments: Experiments, capability: str = "chat") -> Counter[str]:
    counts: Counter[str] = Counter()
    for user in USERS:
        assignment = experiments.assign(capability, user)
        assert assignment is not None
        counts[assignment.variant.name] += 1
    return counts


def test_split_of_10000_users_is_within_two_points(tmp_path: Path) -> None:
    settings = _settings(
        tmp_path,
        experiments={
            "three-way": {
                "capability": "chat",
                "variants": [
                    {"name": "a", "percent": 10},
                    {"name": "b", "percent": 30, "model": "qwen-turbo"},
                    {"name": "c", "percent": 60, "model": "qwen-max"},
                ],
            }
        },
    )
    counts = _split(Experiments(settings))
    assert sum(counts.values()) == 10_000
    for name, percent in (("a", 10), ("b", 30), ("c", 60)):
        assert abs(counts[name] / 100 - percent) <= 2, counts


def test_assignment_is_sticky_across_requests_and_restart(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    first = Experiments(settings)
    first.create(
        ExperimentSpec(
            id="turbo-test",
            capability="chat",
            variants=[
                {"name": "control", "percent": 50},
                {"name": "turbo", "percent": 50, "model": "qwen-turbo"},
            ],
        )
    )
    before = {u: first.assign("chat", u).variant.name for u in USERS[:2000]}
    again = {u: first.assign("chat", u).variant.name for u in USERS[:2000]}
    assert before == again
    assert set(before.values()) == {"control", "turbo"}

    # A restart: a new Services instance over the same data dir sees the admin-created experiment.
    restarted = build_services(settings).experiments
    assert restarted.get("turbo-test") is not None
    after = {u: restarted.assign("chat", u).variant.name for u in USERS[:2000]}
    assert after == before


def test_percentages_change_live_and_bad_changes_are_refused(tmp_path: Path) -> None:
    experiments = Experiments(_settings(tmp_path))
    experiments.create(
        ExperimentSpec(
            id="voice-test",
            capability="tts",
            variants=[{"name": "a", "percent": 90}, {"name": "b", "percent": 10, "voice": "longwan"}],
        )
    )
    assert abs(_split(experiments, "tts")["b"] / 100 - 10) <= 2
    experiments.update("voice-test", {"percentages": {"a": 40, "b": 60}})
    assert abs(_split(experiments, "tts")["b"] / 100 - 60) <= 2
    with pytest.raises(ExperimentInvalid):
        experiments.update("voice-test", {"percentages": {"a": 70}})  # 70 + 60 != 100
    with pytest.raises(ExperimentInvalid):
        experiments.update("voice-test", {"percentages": {"zzz": 50, "a": 50}})
    with pytest.raises(ExperimentConflict):  # one running experiment per capability
        experiments.create(
            ExperimentSpec(
                id="other",
                capability="tts",
                variants=[{"name": "x", "percent": 50}, {"name": "y", "percent": 50}],
            )
        )


def test_buckets_move_only_when_their_owner_changes(tmp_path: Path) -> None:
    """Raising b from 10 % to 20 % moves users only from a to b, never the other way."""
    experiments = Experiments(_settings(tmp_path))
    experiments.create(
        ExperimentSpec(
            id="grow",
            capability="chat",
            variants=[{"name": "a", "percent": 90}, {"name": "b", "percent": 10}],
        )
    )
    before = {u: experiments.assign("chat", u).variant.name for u in USERS}
    experiments.update("grow", {"percentages": {"a": 80, "b": 20}})
    after = {u: experiments.assign("chat", u).variant.name for u in USERS}
    assert all(after[u] == "b" for u in USERS if before[u] == "b")
    assert 0 <= bucket("grow", "user-1") < 10_000


def test_apply_changes_the_request_and_tags_the_context(tmp_path: Path) -> None:
    experiments = Experiments(
        _settings(
            tmp_path,
            experiments={
                "prompt": {
                    "capability": "chat",
                    "variants": [
                        {"name": "plain", "percent": 0},
                        {
                            "name": "terse",
                            "percent": 100,
                            "model": "qwen-turbo",
                            "system_prompt": "Be terse.",
                        },
                    ],
                }
            },
        )
    )
    ctx = RequestContext(request_id="r1", user="alice")
    req = ChatRequest(
        model="default", messages=[{"role": "system", "content": "x"}, {"role": "user", "content": "hi"}]
    )
    out = experiments.apply("chat", ctx, req)
    assert ctx.variant == "prompt:terse"
    assert out.model == "qwen-turbo"
    assert out.messages == [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "hi"}]
    anonymous = RequestContext(request_id="r2")
    assert experiments.apply("chat", anonymous, req) is req  # no user id: not enrolled
    assert anonymous.variant is None


def test_admin_api_end_to_end_through_the_simulator(gateway_settings: Any, run_gateway: Any) -> None:
    # /v1 open (auth none) for the SDK calls; /admin needs the admin key.
    settings = gateway_settings(auth="none", admin_key=ADMIN_KEY)
    gw = run_gateway(settings)
    admin = httpx.Client(base_url=gw.url, timeout=30, headers=ADMIN)
    spec = {
        "id": "qwen-ab",
        "capability": "chat",
        "variants": [
            {"name": "plus", "percent": 50, "model": "qwen-plus"},
            {"name": "turbo", "percent": 50, "route": ["bailian:qwen-turbo", "local:smollm2"]},
        ],
    }
    r = admin.post("/admin/experiments", json=spec)
    assert r.status_code == 201, r.text
    assert admin.post("/admin/experiments", json=spec).status_code == 409
    bad = admin.post("/admin/experiments", json={**spec, "id": "bad", "variants": spec["variants"][:1]})
    assert bad.status_code == 422, bad.text
    assert bad.json()["error"]["param"] == "variants" and "at least 2" in bad.json()["error"]["message"]

    def expected(user: str) -> str:
        return "bailian:qwen-plus" if bucket("qwen-ab", user) < 5000 else "bailian:qwen-turbo"

    def ask(base_url: str, user: str) -> str:
        client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="default",
            messages=[{"role": "user", "content": "Hello"}],
            extra_headers={"x-talkgate-user": user},
        )
        raw.parse()
        return raw.headers["x-talkgate-provider"]

    users = [f"customer-{i}" for i in range(24)]
    seen = {u: ask(gw.url, u) for u in users}
    assert seen == {u: expected(u) for u in users}
    assert {ask(gw.url, u) for u in users[:6]} <= set(seen.values())
    assert all(ask(gw.url, u) == seen[u] for u in users[:6])  # sticky across requests
    assert len(set(seen.values())) == 2

    # 36 requests; the last one is booked just after its response went out, so allow a moment.
    deadline = time.monotonic() + 5
    while True:
        report = admin.get("/admin/experiments/qwen-ab").json()
        stats = {v["name"]: v["stats"] for v in report["variants"]}
        total = stats["plus"]["requests"] + stats["turbo"]["requests"]
        if total >= 36 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert total == 36
    assert stats["plus"]["requests"] == 2 * sum(seen[u] == "bailian:qwen-plus" for u in users[:6]) + sum(
        seen[u] == "bailian:qwen-plus" for u in users
    )
    assert stats["plus"]["error_rate"] == 0 and stats["turbo"]["error_rate"] == 0
    assert stats["plus"]["latency_ms"]["p50"] is not None
    metrics = admin.get("/metrics").text
    assert 'variant="qwen-ab:turbo"' in metrics

    patched = admin.patch("/admin/experiments/qwen-ab", json={"percentages": {"plus": 0, "turbo": 100}})
    assert patched.status_code == 200, patched.text
    assert all(ask(gw.url, u) == "bailian:qwen-turbo" for u in users[:4])
    assert admin.patch("/admin/experiments/qwen-ab", json={"percentages": {"plus": 10}}).status_code == 400
    assert (
        admin.patch("/admin/experiments/qwen-ab", json={"percentages": {"plus": 100, "turbo": 0}}).status_code
        == 200
    )

    # Restart: a new gateway over the same data dir keeps the experiment and the assignments.
    gw2 = run_gateway(gateway_settings(auth="none", admin_key=ADMIN_KEY))
    assert httpx.get(f"{gw2.url}/admin/experiments/qwen-ab", headers=ADMIN).status_code == 200
    assert ask(gw2.url, users[0]) == "bailian:qwen-plus"

    assert admin.delete("/admin/experiments/qwen-ab").status_code == 200
    assert admin.get("/admin/experiments/qwen-ab").status_code == 404
    assert ask(gw.url, users[0]) == "bailian:qwen-plus"  # default chain again, no variant


@pytest.mark.redis
async def test_replicas_share_admin_experiments_through_redis(tmp_path: Path, redis_url: str) -> None:
    """Two replicas (own data dirs, one Redis): a change on one is adopted by the other."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url)
    try:
        a = Experiments(_settings(tmp_path / "a"))
        b = Experiments(_settings(tmp_path / "b"))
        a.create(
            ExperimentSpec(
                id="shared",
                capability="chat",
                variants=[{"name": "x", "percent": 25}, {"name": "y", "percent": 75, "model": "qwen-turbo"}],
            )
        )
        await a.publish(client)
        assert await b.refresh(client) is True
        assert await b.refresh(client) is False  # nothing new
        assert {u: b.assign("chat", u).label for u in USERS[:500]} == {
            u: a.assign("chat", u).label for u in USERS[:500]
        }
        a.update("shared", {"percentages": {"x": 100, "y": 0}})
        await a.publish(client)
        await b.refresh(client)
        assert b.assign("chat", "anyone").variant.name == "x"
        # b persisted what it adopted: a restart of b without Redis still has it.
        assert Experiments(_settings(tmp_path / "b")).get("shared") is not None
        a.delete("shared")
        await a.publish(client)
        assert await b.refresh(client) is True
        assert b.get("shared") is None and b.assign("chat", "anyone") is None
    finally:
        await client.aclose()
