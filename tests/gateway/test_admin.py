"""/admin: who may call it, tenants and keys through the API, and the ``talkgate keys`` CLI."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest
from fastapi.routing import APIRoute

from gateway.cli import main as cli_main
from tests.gateway.saas_support import CHAT, database_url, saas  # noqa: F401


def _admin_routes(gw: Any) -> list[tuple[str, str]]:
    def walk(routes: list[Any]) -> Any:
        for r in routes:
            if hasattr(r, "original_router"):
                yield from walk(r.original_router.routes)
            else:
                yield r

    out = []
    for route in walk(gw.server.server.config.app.routes):
        if isinstance(route, APIRoute) and route.path.startswith("/admin"):
            path = re.sub(r"\{[^}]+\}", "x", route.path)
            out += [(m, path) for m in sorted(route.methods) if m != "HEAD"]
    assert ("POST", "/admin/keys") in out and ("GET", "/admin/usage") in out
    return out


def test_admin_routes_refuse_normal_keys_and_anonymous_callers(saas: Any) -> None:  # noqa: F811
    gw = saas()
    normal = gw.client(gw.create_key(scopes=["chat", "asr", "tts", "talk", "avatars"])["key"])
    anonymous = gw.client()
    admin_scoped = gw.client(gw.create_key(tenant="ops", scopes=["admin"])["key"])
    for method, path in _admin_routes(gw):
        r = anonymous.request(method, path, json={})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key", (method, path)
        r = normal.request(method, path, json={})
        assert r.status_code == 403, (method, path, r.text)
        assert r.json()["error"]["type"] == "permission_error"
    assert admin_scoped.get("/admin/keys").status_code == 200
    assert admin_scoped.get("/admin/usage").status_code == 200


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("auth", ["none", "auto", "keys"])
def test_admin_is_never_open_without_an_admin_key(
    saas: Any,  # noqa: F811
    database_url: str,  # noqa: F811
    auth: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """No TALKGATE_ADMIN_KEY: every /admin route is a 403 that says how to enable it, whatever
    the auth mode (auth=none opens /v1 only); an admin-scoped key still works."""
    gw = saas(admin_key=None, auth=auth)
    anonymous = gw.client()
    guessing = gw.client("tg-admin-test-7f3c2b9e1d4a")  # an admin key this gateway does not have
    routes = _admin_routes(gw)
    assert {p.split("/")[2] for _, p in routes} >= {
        "keys", "tenants", "usage", "providers", "models", "experiments"
    }  # fmt: skip
    for method, path in routes:
        for client in (anonymous, guessing):
            r = client.request(method, path, json={})
            assert r.status_code == 403, (method, path, r.status_code, r.text)
            error = r.json()["error"]
            assert error["type"] == "permission_error" and error["code"] == "admin_disabled", error
            assert "TALKGATE_ADMIN_KEY" in error["message"]
    assert gw.services.keystore is not None and not gw.services.settings.admin_key
    # Nothing was created through the refused calls.
    monkeypatch.setenv("TALKGATE_DATABASE_URL", database_url)
    assert cli_main(["keys", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    # An operator key made with the CLI (scope admin) opens /admin even without TALKGATE_ADMIN_KEY.
    assert cli_main(["keys", "create", "--tenant", "ops", "--scopes", "admin", "--json"]) == 0
    operator = gw.client(json.loads(capsys.readouterr().out)["key"])
    assert operator.get("/admin/keys").status_code == 200
    assert operator.get("/admin/providers").status_code == 200
    v1 = anonymous.post("/v1/chat/completions", json=CHAT)
    assert v1.status_code == (401 if auth == "keys" else 200), v1.text


def test_tenants_and_keys_api(saas: Any) -> None:  # noqa: F811
    gw = saas()
    a = gw.admin
    r = a.post("/admin/tenants", json={"id": "acme", "name": "Acme Corp", "quotas": {"tokens": 1000}})
    assert r.status_code == 201 and r.json()["name"] == "Acme Corp"
    assert a.post("/admin/tenants", json={"id": "acme"}).status_code == 409
    assert a.post("/admin/tenants", json={"id": "bad id!"}).status_code == 422
    listed = a.get("/admin/tenants").json()["data"]
    assert [(t["id"], t["quotas"]["tokens"]) for t in listed] == [("acme", 1000)]

    assert a.post("/admin/keys", json={"tenant": "acme", "scopes": ["root"]}).status_code == 422
    assert a.post("/admin/keys", json={"tenant": "acme", "scopes": []}).status_code == 422
    assert a.post("/admin/keys", json={"tenant": "acme", "scopes": ["chat"], "rpm": 0}).status_code == 422
    assert (
        a.post("/admin/keys", json={"tenant": "acme", "scopes": ["chat"], "secret": "x"}).status_code == 422
    )
    k1 = gw.create_key(tenant="acme", scopes=["chat"], tpm=5000, concurrency=2)
    k2 = gw.create_key(tenant="newco", scopes=["tts"])  # unknown tenants are created on first key
    assert k1["tpm"] == 5000 and k1["concurrency"] == 2
    assert {t["id"] for t in a.get("/admin/tenants").json()["data"]} == {"acme", "newco"}
    only_acme = a.get("/admin/keys", params={"tenant": "acme"}).json()["data"]
    assert [k["id"] for k in only_acme] == [k1["id"]]
    everything = a.get("/admin/keys").text
    assert k1["key"] not in everything and k2["key"] not in everything
    assert "sha256" not in everything and "hash" not in everything


def test_keys_cli_create_list_revoke(
    saas: Any,  # noqa: F811
    database_url: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("TALKGATE_DATABASE_URL", database_url)
    assert (
        cli_main(["keys", "create", "--tenant", "cli", "--scopes", "chat,tts", "--rpm", "30", "--json"]) == 0
    )
    created = json.loads(capsys.readouterr().out)
    assert created["key"].startswith("tg_") and created["scopes"] == ["chat", "tts"] and created["rpm"] == 30

    gw = saas(saas={"key_cache_ttl_s": 0.2})
    c = gw.client(created["key"])
    assert c.post("/v1/chat/completions", json=CHAT).status_code == 200

    assert cli_main(["keys", "list"]) == 0
    table = capsys.readouterr().out
    assert created["id"] in table and created["prefix"] in table and "active" in table
    assert created["key"] not in table

    assert cli_main(["keys", "revoke", created["id"]]) == 0
    assert "revoked" in capsys.readouterr().out
    time.sleep(0.3)  # another process revoked it: this gateway sees it within its key-cache TTL
    assert c.post("/v1/chat/completions", json=CHAT).status_code == 401
    assert cli_main(["keys", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["revoked_at"]

    assert cli_main(["keys", "revoke", "key_missing"]) == 1
    assert cli_main(["keys", "create", "--tenant", "cli", "--scopes", "chat,root"]) == 2
    assert "unknown scope" in capsys.readouterr().err


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_usage_times_out_of_range_are_a_clear_400(saas: Any) -> None:  # noqa: F811
    gw = saas()
    for param, value in [
        ("since", "inf"),
        ("since", "-1e400"),
        ("since", "99999999999999999999"),
        ("until", "nan"),
        ("until", "-5"),
        ("since", "0001-01-01T00:00:00+05:00"),
    ]:
        r = gw.admin.get("/admin/usage", params={param: value})
        assert r.status_code == 400, (param, value, r.text)
        error = r.json()["error"]
        assert error["param"] == param and "between 1970-01-01 and 9999-12-31" in error["message"]
    ok = gw.admin.get("/admin/usage", params={"since": "0", "until": "253402300799"})
    assert ok.status_code == 200, ok.text


def test_keys_cli_refuses_an_expiry_in_the_past(
    database_url: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("TALKGATE_DATABASE_URL", database_url)
    assert (
        cli_main(["keys", "create", "--tenant", "t", "--scopes", "chat", "--expires-at", "2020-01-01"]) == 2
    )
    assert "--expires-at 2020-01-01 is in the past" in capsys.readouterr().err
    assert cli_main(["keys", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []  # nothing was created
    assert (
        cli_main(["keys", "create", "--tenant", "t", "--scopes", "chat", "--expires-at", "2999-01-01"]) == 0
    )
    assert "key:" in capsys.readouterr().out
