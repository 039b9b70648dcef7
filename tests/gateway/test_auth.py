"""API keys end to end: lifecycle, scopes on every /v1 route, revocation, expiry, no secret in logs."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import openai
import pytest
from fastapi.routing import APIRoute, APIWebSocketRoute

from tests.gateway.saas_support import ADMIN_KEY, CHAT, Gateway, database_url, query, saas  # noqa: F401

V1_SCOPES = ("chat", "asr", "tts", "talk", "avatars", "realtime", "knowledge:read", "knowledge:write")


def _walk(routes: list[Any]) -> Any:
    """All routes, descending into included routers (FastAPI keeps them nested)."""
    for r in routes:
        if hasattr(r, "original_router"):
            yield from _walk(r.original_router.routes)
        else:
            yield r


def _v1_routes(gw: Gateway) -> list[tuple[str, str, str]]:
    """(method, path with params filled, required scope) for every /v1 route of the app."""
    app = gw.server.server.config.app
    found = []
    for route in _walk(app.routes):
        if not isinstance(route, APIRoute | APIWebSocketRoute) or not route.path.startswith("/v1"):
            continue
        scopes = [getattr(d.call, "talkgate_scope", None) for d in route.dependant.dependencies]
        scopes = [s for s in scopes if s]
        assert scopes, f"{route.path} has no require_scope dependency: it would be open to anyone"
        path = re.sub(r"\{[^}]+\}", "x", route.path)
        methods = sorted(route.methods) if isinstance(route, APIRoute) else ["WS"]
        found += [(m, path, scopes[0]) for m in methods if m != "HEAD"]
    assert {"/v1/chat/completions", "/v1/audio/speech", "/v1/audio/transcriptions"} <= {
        p for _, p, _ in found
    }
    return found


def test_every_v1_route_refuses_missing_and_bad_keys(saas: Any) -> None:  # noqa: F811
    gw = saas()
    anonymous, bad = gw.client(), gw.client("tg_" + "A" * 43)
    for method, path, _ in _v1_routes(gw):
        if method == "WS":
            continue
        for c in (anonymous, bad):
            r = c.request(method, path, json={})
            assert r.status_code == 401, (method, path, r.text)
            err = r.json()["error"]
            assert err["code"] == "invalid_api_key" and err["type"] == "invalid_request_error"
            assert r.headers["x-request-id"]


def test_scope_enforced_on_every_v1_route(saas: Any) -> None:  # noqa: F811
    gw = saas()
    keys = {scope: gw.create_key(scopes=[scope])["key"] for scope in V1_SCOPES}
    keys["admin"] = gw.create_key(scopes=["admin"])["key"]
    for method, path, needed in _v1_routes(gw):
        if method == "WS":
            continue
        for scope, key in keys.items():
            r = gw.client(key).request(method, path, json={})
            if needed in (scope, "*"):
                assert r.status_code not in (401, 403), (method, path, scope, r.text)
            else:
                assert r.status_code == 403, (method, path, scope, r.text)
                assert r.json()["error"]["code"] == "insufficient_scope"
                assert f"'{needed}'" in r.json()["error"]["message"]


def test_key_lifecycle(saas: Any, sim: Any, database_url: str) -> None:  # noqa: F811
    gw = saas()
    created = gw.create_key(tenant="acme", scopes=["chat"], name="ci", rpm=100)
    secret = created["key"]
    assert secret.startswith("tg_") and len(secret) >= 3 + 43  # 32 random bytes, url-safe
    assert created["prefix"] == secret[:11] and created["tenant"] == "acme"
    assert created["scopes"] == ["chat"] and created["rpm"] == 100 and created["revoked_at"] is None

    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=secret, max_retries=0)
    reply = client.chat.completions.create(**CHAT)
    assert reply.choices[0].message.content

    # Listing shows the key but never its secret or hash; the database holds only the hash.
    digest = hashlib.sha256(secret.encode()).hexdigest()
    listing = gw.admin.get("/admin/keys")
    assert listing.status_code == 200
    assert [k["id"] for k in listing.json()["data"]] == [created["id"]]
    assert (
        secret not in listing.text and digest not in listing.text and "key" not in listing.json()["data"][0]
    )
    stored = query(database_url, "SELECT * FROM api_keys")
    assert len(stored) == 1 and digest in stored[0] and all(secret not in str(v) for v in stored[0])

    revoked = gw.admin.delete(f"/admin/keys/{created['id']}")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    with pytest.raises(openai.AuthenticationError) as err:
        client.chat.completions.create(**CHAT)
    assert err.value.code == "invalid_api_key" and "revoked" in err.value.message
    assert gw.admin.delete("/admin/keys/key_doesnotexist").status_code == 404


def test_expired_key_is_refused(saas: Any) -> None:  # noqa: F811
    gw = saas()
    expires = datetime.now(UTC) + timedelta(seconds=1.5)
    key = gw.create_key(scopes=["chat"], expires_at=expires.isoformat())["key"]
    c = gw.client(key)
    assert c.post("/v1/chat/completions", json=CHAT).status_code == 200
    time.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 0.1)
    r = c.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 401 and "expired" in r.json()["error"]["message"]
    past = gw.admin.post(
        "/admin/keys", json={"tenant": "acme", "scopes": ["chat"], "expires_at": "2020-01-01"}
    )
    assert past.status_code == 400


def test_revocation_reaches_other_replicas_within_the_cache_ttl(saas: Any) -> None:  # noqa: F811
    ttl = 0.5
    a = saas(saas={"key_cache_ttl_s": ttl})
    b = saas(saas={"key_cache_ttl_s": ttl, "migrate_on_start": False})
    key = a.create_key(scopes=["chat"])
    on_a, on_b = a.client(key["key"]), b.client(key["key"])
    assert on_b.post("/v1/chat/completions", json=CHAT).status_code == 200  # now cached on b
    assert a.admin.delete(f"/admin/keys/{key['id']}").status_code == 200
    assert on_a.post("/v1/chat/completions", json=CHAT).status_code == 401  # revoking replica: at once
    time.sleep(ttl + 0.1)
    assert on_b.post("/v1/chat/completions", json=CHAT).status_code == 401  # others: within the TTL


def test_admin_key_and_admin_scope_work_on_v1(saas: Any) -> None:  # noqa: F811
    gw = saas()
    assert gw.admin.post("/v1/chat/completions", json=CHAT).status_code == 200
    assert gw.client("not-the-admin-key").post("/v1/chat/completions", json=CHAT).status_code == 401


def test_auth_off_means_anonymous_default_tenant(
    gateway_settings: Any, run_gateway: Any, tmp_path: Any
) -> None:
    import httpx

    server = run_gateway(
        gateway_settings(
            database_url=f"sqlite+aiosqlite:///{tmp_path / 'open.db'}",
            auth="none",
            admin_key="adm-open-0123456789",
        )
    )
    with httpx.Client(base_url=server.url, timeout=30) as c:
        assert c.post("/v1/chat/completions", json=CHAT).status_code == 200
        # any bearer is ignored when auth is off (SDKs always send one)
        assert (
            c.post("/v1/chat/completions", json=CHAT, headers={"authorization": "Bearer x"}).status_code
            == 200
        )
        assert c.get("/admin/usage").status_code == 401  # /admin still needs the admin key
        admin = {"authorization": "Bearer adm-open-0123456789"}
        usage = c.get("/admin/usage", params={"group_by": "tenant"}, headers=admin).json()["data"]
    assert [(u["group"], u["requests"]) for u in usage] == [("default", 2)]


def test_auth_keys_mode_without_admin_key(saas: Any, database_url: str) -> None:  # noqa: F811
    from gateway.keystore import KeyStore

    gw = saas(admin_key=None, auth="keys")
    assert gw.client().post("/v1/chat/completions", json=CHAT).status_code == 401
    closed = gw.client().get("/admin/keys")  # admin closed too, saying how to open it
    assert closed.status_code == 403 and closed.json()["error"]["code"] == "admin_disabled"

    async def make() -> tuple[str, str]:
        store = KeyStore(database_url)
        try:
            admin, _ = await store.create_key("ops", ["admin"])
            user, _ = await store.create_key("acme", ["chat"])
            return admin, user
        finally:
            await store.close()

    admin, user = asyncio.run(make())
    assert gw.client(user).post("/v1/chat/completions", json=CHAT).status_code == 200
    assert gw.client(user).get("/admin/keys").status_code == 403
    assert gw.client(admin).get("/admin/keys").status_code == 200


def test_secrets_never_logged(saas: Any, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    caplog.set_level(logging.DEBUG)
    gw = saas()
    key = gw.create_key(scopes=["chat"])
    secret = key["key"]
    c = gw.client(secret)
    assert c.post("/v1/chat/completions", json=CHAT).status_code == 200
    bad = secret[:-4] + "AAAA"
    assert gw.client(bad).post("/v1/chat/completions", json=CHAT).status_code == 401
    assert gw.admin.delete(f"/admin/keys/{key['id']}").status_code == 200
    assert c.post("/v1/chat/completions", json=CHAT).status_code == 401
    # The test's own HTTP client (httpx/httpcore) logs its request headers; the gateway must not.
    records = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    assert any(r.name.startswith("talkgate") for r in records), "expected gateway log output to inspect"
    logged = "".join(f"{r.getMessage()} {r.args} {r.exc_text or ''}" for r in records)
    for s in (secret, bad, ADMIN_KEY, secret[11:]):
        assert s not in logged
    # The hash is no secret (aiosqlite's DEBUG log shows it as a query parameter), but ours never log it.
    ours = "".join(r.getMessage() for r in records if r.name.startswith("talkgate"))
    assert hashlib.sha256(secret.encode()).hexdigest() not in ours
