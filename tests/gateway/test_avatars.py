"""/v1/avatars against a real gateway: create, fetch, delete, persistence and refusals."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from tests.lipsync.media import astronaut_png, faceless_png


def _gateway(
    run_gateway: Callable[..., Any], gateway_settings: Callable[..., Any], **kw: Any
) -> httpx.Client:
    server = run_gateway(gateway_settings(**kw))
    return httpx.Client(base_url=server.url, timeout=30)


def test_create_get_delete(run_gateway: Any, gateway_settings: Any) -> None:
    client = _gateway(run_gateway, gateway_settings)
    r = client.post("/v1/avatars", files={"image": ("me.png", astronaut_png(), "image/png")})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["object"] == "avatar" and body["id"].startswith("av_")
    assert (body["width"], body["height"]) == (512, 512)
    x1, y1, x2, y2 = body["box"]
    assert 150 < x1 < x2 < 300 and 40 < y1 < y2 < 220
    assert isinstance(body["created"], int)
    got = client.get(f"/v1/avatars/{body['id']}")
    assert got.status_code == 200 and got.json() == body
    assert client.delete(f"/v1/avatars/{body['id']}").json()["deleted"] is True
    gone = client.get(f"/v1/avatars/{body['id']}")
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "avatar_not_found"
    assert client.delete(f"/v1/avatars/{body['id']}").status_code == 404


def test_avatars_persist_across_restarts(run_gateway: Any, gateway_settings: Any) -> None:
    settings = gateway_settings()
    first = httpx.Client(base_url=run_gateway(settings).url, timeout=30)
    created = first.post("/v1/avatars", files={"image": ("me.png", astronaut_png(), "image/png")}).json()
    second = httpx.Client(base_url=run_gateway(gateway_settings()).url, timeout=30)  # same data_dir
    assert second.get(f"/v1/avatars/{created['id']}").json()["box"] == created["box"]


def test_no_face_is_422_with_the_reason(run_gateway: Any, gateway_settings: Any) -> None:
    client = _gateway(run_gateway, gateway_settings)
    r = client.post("/v1/avatars", files={"image": ("x.png", faceless_png(), "image/png")})
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["code"] == "no_face" and "no face" in err["message"] and err["param"] == "image"


def test_several_faces_and_face_index(run_gateway: Any, gateway_settings: Any) -> None:
    import numpy as np

    from tests.lipsync.media import astronaut_bgr, png

    pair = png(np.hstack([astronaut_bgr(), astronaut_bgr()]))
    client = _gateway(run_gateway, gateway_settings)
    r = client.post("/v1/avatars", files={"image": ("two.png", pair, "image/png")})
    assert r.status_code == 422 and r.json()["error"]["code"] == "multiple_faces"
    r = client.post("/v1/avatars", files={"image": ("two.png", pair, "image/png")}, data={"face_index": "1"})
    assert r.status_code == 201 and r.json()["box"][0] > 512
    r = client.post("/v1/avatars", files={"image": ("two.png", pair, "image/png")}, data={"face_index": "x"})
    assert r.status_code == 400


def test_bad_uploads(run_gateway: Any, gateway_settings: Any) -> None:
    client = _gateway(run_gateway, gateway_settings, max_upload_bytes=200_000)
    r = client.post("/v1/avatars", files={"image": ("x.png", b"GIF89a not really", "image/png")})
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_image"
    r = client.post("/v1/avatars", files={"other": ("x.png", astronaut_png(), "image/png")})
    assert r.status_code == 400 and r.json()["error"]["param"] == "image"
    r = client.post("/v1/avatars", json={"image": "x"})
    assert r.status_code == 400 and "multipart" in r.json()["error"]["message"]
    big = b"\x89PNG" + b"0" * 300_000
    r = client.post("/v1/avatars", files={"image": ("big.png", big, "image/png")})
    assert r.status_code == 413
    assert client.get("/v1/avatars/av_nothere").status_code == 404
