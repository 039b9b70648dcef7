"""Response cache: canonical keys, request controls, backends, and end to end through the gateway
(identical bytes on a hit, SSE replay, tenant isolation, TTS and ASR)."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import httpx
import orjson
import pytest
import redis.asyncio as aioredis

from gateway.settings import CacheConfig
from policies.cache import CacheEntry, MemoryBackend, ResponseCache, canonical_json
from tests.gateway.saas_support import CHAT, database_url, saas, saas_redis_url  # noqa: F401

DETERMINISTIC = {**CHAT, "temperature": 0}


def _ctx() -> Any:
    return SimpleNamespace(cache="bypass")


# --------------------------------------------------------------------------- units


def test_keys_are_canonical_and_per_tenant() -> None:
    cache = ResponseCache(CacheConfig())
    a = cache.key("acme", "chat", {"temperature": 0, "messages": [{"role": "user", "content": "hi"}]})
    b = cache.key("acme", "chat", {"messages": [{"content": "hi", "role": "user"}], "temperature": 0.0})
    assert a == b  # key order and 0 vs 0.0 do not matter
    assert cache.key("globex", "chat", {"temperature": 0}) != cache.key("acme", "chat", {"temperature": 0})
    assert cache.key("acme", "tts", {"x": 1}) != cache.key("acme", "chat", {"x": 1})
    assert canonical_json({"b": 1.5, "a": [2.0]}) == b'{"a":[2],"b":1.5}'


@pytest.mark.parametrize(
    ("headers", "deterministic", "lookup", "store", "status"),
    [
        ({}, True, True, True, "miss"),
        ({}, False, False, False, "bypass"),
        ({"x-talkgate-cache": "force"}, False, True, True, "miss"),
        ({"x-talkgate-cache": "off"}, True, False, False, "bypass"),
        ({"cache-control": "no-store"}, True, False, False, "bypass"),
        ({"cache-control": "no-cache"}, True, False, True, "miss"),
        ({"cache-control": "max-age=0, No-Cache"}, True, False, True, "miss"),
    ],
)
def test_request_controls(
    headers: dict[str, str], deterministic: bool, lookup: bool, store: bool, status: str
) -> None:
    ctx = _ctx()
    plan = ResponseCache(CacheConfig()).plan(headers, ctx, "t", "chat", {}, deterministic=deterministic)
    assert (plan.lookup, plan.store, ctx.cache) == (lookup, store, status)
    disabled = ResponseCache(CacheConfig(enabled=False)).plan({}, _ctx(), "t", "chat", {})
    assert not disabled.lookup and not disabled.store


def test_entry_round_trip_keeps_bytes() -> None:
    body = bytes(range(256)) * 10
    entry = CacheEntry(body, "audio/mpeg", {"headers": {"x": "1"}})
    back = CacheEntry.loads(entry.dumps())
    assert (
        back is not None and back.body == body and back.media_type == "audio/mpeg" and back.meta == entry.meta
    )
    assert CacheEntry.loads(b"garbage") is None


async def test_memory_lru_respects_entry_and_byte_caps_and_ttl() -> None:
    lru = MemoryBackend(max_entries=3, max_total_bytes=100)
    for k in "abc":
        await lru.set(k, b"x" * 10, 60)
    await lru.get("a")  # a is now most recent
    await lru.set("d", b"x" * 10, 60)
    assert await lru.get("b") is None and await lru.get("a") is not None
    await lru.set("big", b"y" * 95, 60)  # pushes out everything else to stay under 100 bytes
    assert await lru.get("big") is not None and await lru.get("a") is None
    await lru.set("gone", b"z", 0)
    assert await lru.get("gone") is None  # expired
    cache = ResponseCache(CacheConfig(max_entry_bytes=50))
    assert not await cache.put("k", CacheEntry(b"q" * 100))
    assert await cache.get("k") is None


async def test_redis_backend_sets_ttl(saas_redis_url: str) -> None:  # noqa: F811
    client = aioredis.Redis.from_url(saas_redis_url)
    try:
        cache = ResponseCache(CacheConfig(ttl_s=120, max_entry_bytes=1000), client)
        key = cache.key("acme", "tts", {"text": "hi"})
        assert await cache.put(key, CacheEntry(b"audio", "audio/wav"))
        assert 110 <= await client.ttl(key) <= 120
        got = await cache.get(key)
        assert got is not None and got.body == b"audio"
        assert not await cache.put(key + "2", CacheEntry(b"a" * 2000))
        assert await client.exists(key + "2") == 0
    finally:
        await client.aclose()


async def test_redis_failure_is_a_miss_not_an_error() -> None:
    client = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    try:
        cache = ResponseCache(CacheConfig(), client)
        assert await cache.get("k") is None
        assert await cache.put("k", CacheEntry(b"x")) is False
    finally:
        await client.aclose()


# --------------------------------------------------------------------------- end to end


def _sse_text(body: str) -> str:
    text = ""
    for block in body.split("\n\n"):
        if block.startswith("data: {"):
            for choice in orjson.loads(block[6:])["choices"]:
                text += choice["delta"].get("content") or ""
    return text


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("shared", [False, True], ids=["memory", "redis"])
def test_chat_hit_returns_identical_bytes_and_replays_as_sse(
    saas: Any,  # noqa: F811
    sim: Any,
    shared: bool,
    request: pytest.FixtureRequest,
) -> None:
    gw = saas(redis_url=request.getfixturevalue("saas_redis_url")) if shared else saas()
    c = gw.client(gw.create_key(tenant="acme", scopes=["chat"])["key"])
    first = c.post("/v1/chat/completions", json=DETERMINISTIC)
    upstream_calls = len(sim.requests())
    second = c.post("/v1/chat/completions", json={**DETERMINISTIC, "temperature": 0.0})
    assert first.status_code == second.status_code == 200
    assert (first.headers["x-talkgate-cache"], second.headers["x-talkgate-cache"]) == ("miss", "hit")
    assert second.content == first.content  # identical bytes, same completion id
    assert second.headers["x-talkgate-provider"] == first.headers["x-talkgate-provider"]
    assert len(sim.requests()) == upstream_calls  # the hit never reached the upstream

    streamed = c.post("/v1/chat/completions", json={**DETERMINISTIC, "stream": True})
    assert streamed.headers["x-talkgate-cache"] == "hit"
    assert streamed.headers["content-type"].startswith("text/event-stream")
    assert _sse_text(streamed.text) == first.json()["choices"][0]["message"]["content"]
    assert streamed.text.endswith("data: [DONE]\n\n")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_streamed_answer_is_cached_for_later_requests(saas: Any, sim: Any) -> None:  # noqa: F811
    gw = saas()
    c = gw.client(gw.create_key(scopes=["chat"])["key"])
    body = {**DETERMINISTIC, "stream": True}
    first = c.post("/v1/chat/completions", json=body)
    assert first.headers["x-talkgate-cache"] == "miss"
    deadline = time.monotonic() + 3  # stored by the stream's on-done callback, just after [DONE]
    while True:
        again = c.post("/v1/chat/completions", json=DETERMINISTIC)
        if again.headers["x-talkgate-cache"] == "hit" or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert again.headers["x-talkgate-cache"] == "hit"
    assert again.json()["choices"][0]["message"]["content"] == _sse_text(first.text)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_two_tenants_never_share_an_entry(saas: Any, sim: Any, saas_redis_url: str) -> None:  # noqa: F811
    gw = saas(redis_url=saas_redis_url)
    acme = gw.client(gw.create_key(tenant="acme", scopes=["chat"])["key"])
    globex = gw.client(gw.create_key(tenant="globex", scopes=["chat"])["key"])
    a = acme.post("/v1/chat/completions", json=DETERMINISTIC)
    calls = len(sim.requests())
    g = globex.post("/v1/chat/completions", json=DETERMINISTIC)
    assert (a.headers["x-talkgate-cache"], g.headers["x-talkgate-cache"]) == ("miss", "miss")
    assert len(sim.requests()) > calls  # globex went upstream
    assert g.json()["id"] != a.json()["id"]
    assert acme.post("/v1/chat/completions", json=DETERMINISTIC).content == a.content
    assert globex.post("/v1/chat/completions", json=DETERMINISTIC).content == g.content


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_cache_control_and_determinism(saas: Any, sim: Any) -> None:  # noqa: F811
    gw = saas()
    c = gw.client(gw.create_key(scopes=["chat"])["key"])
    first = c.post("/v1/chat/completions", json=DETERMINISTIC)
    skipped = c.post("/v1/chat/completions", json=DETERMINISTIC, headers={"cache-control": "no-store"})
    assert skipped.headers["x-talkgate-cache"] == "bypass" and skipped.json()["id"] != first.json()["id"]
    refreshed = c.post("/v1/chat/completions", json=DETERMINISTIC, headers={"cache-control": "no-cache"})
    assert refreshed.headers["x-talkgate-cache"] == "miss" and refreshed.json()["id"] != first.json()["id"]
    assert c.post("/v1/chat/completions", json=DETERMINISTIC).content == refreshed.content  # refreshed entry

    warm = {**CHAT, "temperature": 0.8}
    assert c.post("/v1/chat/completions", json=warm).headers["x-talkgate-cache"] == "bypass"
    assert c.post("/v1/chat/completions", json=warm).headers["x-talkgate-cache"] == "bypass"
    seeded = {**CHAT, "temperature": 0.8, "seed": 7}
    assert c.post("/v1/chat/completions", json=seeded).headers["x-talkgate-cache"] == "miss"
    assert c.post("/v1/chat/completions", json=seeded).headers["x-talkgate-cache"] == "hit"
    forced = {"x-talkgate-cache": "force"}
    assert c.post("/v1/chat/completions", json=warm, headers=forced).headers["x-talkgate-cache"] == "miss"
    assert c.post("/v1/chat/completions", json=warm, headers=forced).headers["x-talkgate-cache"] == "hit"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_tts_and_asr_hits_are_identical(saas: Any, sim: Any, saas_redis_url: str) -> None:  # noqa: F811
    gw = saas(redis_url=saas_redis_url)
    c = gw.client(gw.create_key(scopes=["tts", "asr"])["key"])
    speech = {
        "model": "tts-1",
        "input": "Hello from the cache test.",
        "voice": "alloy",
        "response_format": "wav",
    }
    first = c.post("/v1/audio/speech", json=speech)
    assert (
        first.status_code == 200 and first.headers["x-talkgate-cache"] == "miss" and len(first.content) > 1000
    )
    calls = len(sim.requests())
    second = c.post("/v1/audio/speech", json=speech)
    assert second.headers["x-talkgate-cache"] == "hit" and second.content == first.content
    assert second.headers["content-type"] == first.headers["content-type"]
    assert second.headers["x-talkgate-sample-rate"] == first.headers["x-talkgate-sample-rate"]
    assert len(sim.requests()) == calls
    other_voice = c.post("/v1/audio/speech", json={**speech, "speed": 1.25})
    assert other_voice.headers["x-talkgate-cache"] == "miss"

    files = {"file": ("hello.wav", first.content, "audio/wav")}
    t1 = c.post("/v1/audio/transcriptions", files=files, data={"model": "whisper-1"})
    assert t1.status_code == 200 and t1.headers["x-talkgate-cache"] == "miss"
    calls = len(sim.requests())
    t2 = c.post("/v1/audio/transcriptions", files=files, data={"model": "whisper-1"})
    assert t2.headers["x-talkgate-cache"] == "hit" and t2.content == t1.content
    assert len(sim.requests()) == calls
    t3 = c.post(
        "/v1/audio/transcriptions", files=files, data={"model": "whisper-1", "response_format": "text"}
    )
    assert t3.headers["x-talkgate-cache"] == "miss"


def test_cache_is_off_when_disabled(gateway_settings: Any, run_gateway: Any, tmp_path: Any) -> None:
    settings = gateway_settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'c.db'}", cache=CacheConfig(enabled=False)
    )
    server = run_gateway(settings)
    with httpx.Client(base_url=server.url, timeout=30) as c:
        for _ in range(2):
            assert c.post("/v1/chat/completions", json=DETERMINISTIC).headers["x-talkgate-cache"] == "bypass"


# --------------------------------------------------------------------------- fallback answers


def _fallback_gateway(gateway_settings: Any, run_gateway: Any) -> Any:
    """Cloud-to-cloud chains (no local model to load), one attempt per target, cache on."""
    from tests.gateway.resilience_support import fast

    settings = fast(retry={"attempts": 1}, cache={"enabled": True})
    settings["routes"]["tts"]["chain"] = ["bailian:cosyvoice-v2", "bailian:qwen-tts"]
    settings["routes"]["asr"]["chain"] = ["bailian:paraformer-realtime-v2", "bailian:qwen3-asr-flash"]
    return run_gateway(gateway_settings(**settings))


def _origin(r: httpx.Response) -> tuple[str, str, str]:
    assert r.status_code == 200, r.text
    return r.headers["x-talkgate-provider"], r.headers["x-talkgate-fallback"], r.headers["x-talkgate-cache"]


def test_fallback_chat_answers_are_never_cached(gateway_settings: Any, run_gateway: Any, sim: Any) -> None:
    """An outage's fallback answer must not be pinned: after recovery the cloud answers (miss),
    and only that answer is then replayed, as fallback 0, plain and streamed."""
    gw = _fallback_gateway(gateway_settings, run_gateway)
    c = httpx.Client(base_url=gw.url, timeout=30)
    sim.fault(service="generation", model="qwen-plus", status=500)
    plain = {**DETERMINISTIC, "messages": [{"role": "user", "content": "cache me please"}]}
    streamed = {**plain, "stream": True}
    assert _origin(c.post("/v1/chat/completions", json=plain)) == ("bailian:qwen-turbo", "1", "miss")
    assert _origin(c.post("/v1/chat/completions", json=streamed)) == ("bailian:qwen-turbo", "1", "miss")
    time.sleep(0.2)  # a streamed answer would be stored just after [DONE]
    sim.clear_faults()
    recovered = c.post("/v1/chat/completions", json=plain)
    assert _origin(recovered) == ("bailian:qwen-plus", "0", "miss")
    hit = c.post("/v1/chat/completions", json=plain)
    assert _origin(hit) == ("bailian:qwen-plus", "0", "hit") and hit.content == recovered.content
    replay = c.post("/v1/chat/completions", json=streamed)
    assert _origin(replay) == ("bailian:qwen-plus", "0", "hit")
    assert _sse_text(replay.text) == recovered.json()["choices"][0]["message"]["content"]


def test_fallback_speech_and_transcripts_are_never_cached(
    gateway_settings: Any, run_gateway: Any, sim: Any
) -> None:
    gw = _fallback_gateway(gateway_settings, run_gateway)
    c = httpx.Client(base_url=gw.url, timeout=30)
    speech = {"model": "tts-1", "input": "Cache this voice.", "voice": "alloy", "response_format": "wav"}
    sim.fault(service="tts", model="cosyvoice-v2", status=500)
    degraded = c.post("/v1/audio/speech", json=speech)
    assert _origin(degraded) == ("bailian:qwen-tts", "1", "miss")
    sim.clear_faults()
    assert _origin(c.post("/v1/audio/speech", json=speech)) == ("bailian:cosyvoice-v2", "0", "miss")
    assert _origin(c.post("/v1/audio/speech", json=speech)) == ("bailian:cosyvoice-v2", "0", "hit")

    files = {"file": ("hello.wav", degraded.content, "audio/wav")}
    sim.fault(service="asr", model="paraformer-realtime-v2", status=500)
    first = c.post("/v1/audio/transcriptions", files=files, data={"model": "whisper-1"})
    assert _origin(first) == ("bailian:qwen3-asr-flash", "1", "miss")
    sim.clear_faults()
    again = c.post("/v1/audio/transcriptions", files=files, data={"model": "whisper-1"})
    assert _origin(again) == ("bailian:paraformer-realtime-v2", "0", "miss")
    hit = c.post("/v1/audio/transcriptions", files=files, data={"model": "whisper-1"})
    assert _origin(hit) == ("bailian:paraformer-realtime-v2", "0", "hit")


@pytest.mark.parametrize("fallback", [True, False])
def test_a_hit_replays_the_fallback_flag_it_was_stored_with(fallback: bool) -> None:
    from starlette.requests import Request

    from gateway import response_cache
    from gateway.context import RequestContext

    produced = RequestContext(request_id="a", provider="local:piper-joe", fallback=fallback)
    entries = [
        response_cache.chat_entry(b"{}", "chatcmpl-1", 1, "hi", "stop", None, produced),
        response_cache.response_entry(_plain_response(), produced),
    ]
    for entry in entries:
        assert CacheEntry.loads(entry.dumps()).meta["fallback"] is fallback  # type: ignore[union-attr]
        for replay in (
            lambda r, e: response_cache.chat_hit_response(r, e, "m", False, False),
            response_cache.cached_response,
            response_cache.speech_hit_response,
        ):
            ctx = RequestContext(request_id="b")  # a new request: fallback 0 until the replay
            replay(Request({"type": "http", "talkgate.ctx": ctx, "headers": []}), entry)
            assert (ctx.provider, ctx.fallback) == ("local:piper-joe", fallback)


def _plain_response() -> Any:
    from fastapi.responses import Response

    return Response(b"text", media_type="text/plain")
