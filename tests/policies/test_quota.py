"""Monthly tenant quotas: exhaustion gives 429 insufficient_quota naming the quota and its reset,
counters survive restarts (seeded from the usage table) and are shared through Redis."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from policies.quota import QuotaExceeded, QuotaTracker, month_bounds
from tests.gateway.saas_support import CHAT, database_url, saas, saas_redis_url  # noqa: F401


def test_month_bounds_roll_over_the_year() -> None:
    start, end = month_bounds(datetime(2026, 12, 15, 10, tzinfo=UTC))
    assert start == datetime(2026, 12, 1, tzinfo=UTC) and end == datetime(2027, 1, 1, tzinfo=UTC)


async def test_tracker_seeds_from_the_database_and_adds_flushed_usage() -> None:
    calls: list[str] = []

    async def from_db(tenant: str, since_ms: int, until_ms: int) -> dict[str, float]:
        calls.append(tenant)
        return {"tokens": 90.0, "tts_chars": 0.0, "asr_seconds": 0.0, "video_seconds": 0.0}

    tracker = QuotaTracker(from_db)
    await tracker.check("acme", {"tokens": 100}, ["tokens"])  # 90 < 100: admitted
    month = month_bounds()[0].strftime("%Y%m")
    await tracker.add({("acme", month): {"tokens": 10.0}})
    with pytest.raises(QuotaExceeded) as exc:
        await tracker.check("acme", {"tokens": 100}, ["tokens"])
    assert calls == ["acme"]  # seeded once
    message = str(exc.value)
    assert "monthly quota of tokens (100 of 100)" in message
    assert month_bounds()[1].strftime("%Y-%m-%dT00:00:00Z") in message
    # other quotas and unlimited ones never block
    await tracker.check("acme", {"tokens": 100, "tts_chars": None}, ["tts_chars"])


def _exhaust(gw: Any, key: str, body: dict[str, Any], path: str = "/v1/chat/completions") -> Any:
    c = gw.client(key, **{"cache-control": "no-store"})  # cache hits are free: bypass them
    for _ in range(20):
        r = c.post(path, json=body)
        if r.status_code == 429:
            return r
        assert r.status_code == 200, r.text
        gw.admin.get("/admin/usage")  # flushes the usage buffer, which feeds the counters
    raise AssertionError("quota never ran out")


@pytest.mark.parametrize("shared", [False, True], ids=["in-process", "redis"])
def test_token_quota_exhaustion_is_a_clear_429(
    saas: Any,  # noqa: F811
    shared: bool,
    request: pytest.FixtureRequest,
) -> None:
    overrides = {"redis_url": request.getfixturevalue("saas_redis_url")} if shared else {}
    gw = saas(**overrides)
    created = gw.admin.post("/admin/tenants", json={"id": "tiny", "quotas": {"tokens": 40}})
    assert created.status_code == 201 and created.json()["quotas"]["tokens"] == 40
    key = gw.create_key(tenant="tiny", scopes=["chat", "tts"])["key"]
    r = _exhaust(gw, key, CHAT)
    err = r.json()["error"]
    assert err["code"] == "insufficient_quota" and err["type"] == "insufficient_quota"
    assert "Tenant 'tiny'" in err["message"] and "monthly quota of tokens" in err["message"]
    assert month_bounds()[1].strftime("%Y-%m-%d") in err["message"]
    assert int(r.headers["retry-after"]) > 0
    # a different capability with no quota of its own still works
    speech = gw.client(key).post("/v1/audio/speech", json={"model": "tts-1", "input": "ok", "voice": "alloy"})
    assert speech.status_code == 200
    # raising the quota lets the tenant back in
    raised = gw.admin.put("/admin/tenants/tiny/quotas", json={"tokens": 1_000_000})
    assert raised.status_code == 200
    assert gw.client(key).post("/v1/chat/completions", json=CHAT).status_code == 200


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_tts_character_quota_survives_a_restart(saas: Any) -> None:  # noqa: F811
    gw = saas()
    assert (
        gw.admin.post("/admin/tenants", json={"id": "voice", "quotas": {"tts_chars": 30}}).status_code == 201
    )
    key = gw.create_key(tenant="voice", scopes=["tts"])["key"]
    speech = {"model": "tts-1", "input": "Twelve chars", "voice": "alloy", "response_format": "pcm"}
    r = _exhaust(gw, key, speech, "/v1/audio/speech")
    assert "TTS characters (36 of 30)" in r.json()["error"]["message"]
    gw.server.stop()
    again = saas()  # a fresh process: counters come back from the usage table
    r = again.client(key, **{"cache-control": "no-store"}).post("/v1/audio/speech", json=speech)
    assert r.status_code == 429 and r.json()["error"]["code"] == "insufficient_quota"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_quota_validation(saas: Any) -> None:  # noqa: F811
    gw = saas()
    assert gw.admin.post("/admin/tenants", json={"id": "t1"}).status_code == 201
    assert gw.admin.put("/admin/tenants/t1/quotas", json={"tokens": -1}).status_code == 422
    assert gw.admin.put("/admin/tenants/t1/quotas", json={"dollars": 5}).status_code == 422
    assert gw.admin.put("/admin/tenants/nobody/quotas", json={"tokens": 5}).status_code == 404
    ok = gw.admin.put("/admin/tenants/t1/quotas", json={"asr_seconds": 3600, "video_seconds": 60.5})
    assert ok.json()["quotas"] == {
        "tokens": None,
        "tts_chars": None,
        "asr_seconds": 3600.0,
        "video_seconds": 60.5,
    }
