"""Artifact URLs never come from the Host header; a Host outside ``allowed_hosts`` is refused
(issue 18 item 6)."""

from __future__ import annotations

from typing import Any

import httpx

from gateway.inputs.hosts import HostCheck, public_url
from tests.lipsync.media import astronaut_png


def test_host_check_and_public_url() -> None:
    check = HostCheck(["talk.example.com", "*.corp.example", "127.0.0.1"])
    assert check.allows("talk.example.com") and check.allows("TALK.example.com:443")
    assert check.allows("a.corp.example") and check.allows("127.0.0.1:8000")
    assert not check.allows("evil.example.com") and not check.allows("corp.example.evil")
    assert not check.allows("")
    assert HostCheck(["*"]).allows("anything")
    assert public_url(None, "/v1/talk/artifacts/x.mp4") == "/v1/talk/artifacts/x.mp4"
    assert public_url("https://talk.example.com/", "/v1/x") == "https://talk.example.com/v1/x"


def talk(server: Any, host: str) -> httpx.Response:
    with httpx.Client(base_url=server.url, timeout=120) as client:
        avatar = client.post("/v1/avatars", files={"image": ("me.png", astronaut_png(), "image/png")})
        assert avatar.status_code == 201, avatar.text
        return client.post(
            "/v1/talk",
            json={"text": "Hello there.", "avatar_id": avatar.json()["id"]},
            headers={"host": host},
        )


def test_a_forged_host_does_not_reach_the_artifact_urls(gateway_settings: Any, run_gateway: Any) -> None:
    gw = run_gateway(gateway_settings())
    r = talk(gw, "evil.example.com")
    assert r.status_code == 200, r.text
    for field in ("audio_url", "video_url"):
        assert r.json()[field].startswith("/v1/talk/artifacts/"), r.json()[field]
        assert "evil" not in r.json()[field]
    assert httpx.get(gw.url + r.json()["video_url"], timeout=30).status_code == 200


def test_the_public_base_url_and_allowed_hosts(gateway_settings: Any, run_gateway: Any) -> None:
    gw = run_gateway(
        gateway_settings(
            public_base_url="https://talk.example.com", allowed_hosts=["talk.example.com", "127.0.0.1"]
        )
    )
    r = talk(gw, "talk.example.com")
    assert r.status_code == 200, r.text
    assert r.json()["video_url"].startswith("https://talk.example.com/v1/talk/artifacts/")
    for path in ("/v1/chat/completions", "/v1/models", "/healthz"):
        refused = httpx.post(gw.url + path, json={}, headers={"host": "evil.example.com"}, timeout=30)
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "invalid_host", path
