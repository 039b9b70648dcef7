"""Raw-HTTP helpers for the simulator's native endpoints: exact bodies and SSE events, no SDK."""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.conftest import SimHandle

TEXT_PATH = "/services/aigc/text-generation/generation"
MM_PATH = "/services/aigc/multimodal-generation/generation"


def post(sim: SimHandle, path: str, body: dict[str, Any], stream: bool = False) -> httpx.Response:
    headers = {"Authorization": f"Bearer {sim.api_key}"}
    if stream:
        headers["X-DashScope-SSE"] = "enable"
    return httpx.post(f"{sim.http_base}{path}", json=body, headers=headers, timeout=10)


def events(text: str) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data JSON) per SSE event, in order."""
    out = []
    for block in text.split("\n\n"):
        lines = block.splitlines()
        name = next((ln[6:] for ln in lines if ln.startswith("event:")), "")
        data = next((ln[5:] for ln in lines if ln.startswith("data:")), None)
        if data is not None:
            out.append((name, json.loads(data)))
    return out


def stream_chunks(sim: SimHandle, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The data of every ``event:result`` of a streamed call (asserts the stream is well formed)."""
    r = post(sim, path, body, stream=True)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    assert "[DONE]" not in r.text
    got = events(r.text)
    assert got and all(name == "result" for name, _ in got), got
    return [data for _, data in got]


def choice(data: dict[str, Any]) -> dict[str, Any]:
    [only] = data["output"]["choices"]
    return only
