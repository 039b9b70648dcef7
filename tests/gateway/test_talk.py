"""/v1/talk end to end: a real gateway routed to the Bailian simulator (fast) and to the local
models (slow), returning MP4s that PyAV reads with picture and sound within 40 ms."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import httpx
import pytest

from lipsync.encode import probe_durations
from tests.gateway.saas_support import database_url, saas  # noqa: F401
from tests.lipsync.media import astronaut_png, faceless_png
from tests.sounds import tone_wav

TIMING_KEYS = {
    "asr_ms",
    "llm_first_sentence_ms",
    "llm_ms",
    "tts_ms",
    "render_ms",
    "first_video_ms",
    "total_ms",
}


def _client(server: Any, timeout: float = 120) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=timeout)


def _avatar(client: httpx.Client) -> str:
    r = client.post("/v1/avatars", files={"image": ("me.png", astronaut_png(), "image/png")})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _check_mp4(data: bytes, tmp_path: Path, name: str = "talk.mp4") -> tuple[float, float]:
    path = tmp_path / name
    path.write_bytes(data)
    video_s, audio_s = probe_durations(path)
    assert video_s > 0.3 and audio_s > 0.3
    assert abs(video_s - audio_s) <= 0.040, (video_s, audio_s)
    with av.open(str(path)) as c:
        assert c.streams.video[0].codec_context.name == "h264"
        assert c.streams.audio[0].codec_context.name == "aac"
        assert (c.streams.video[0].width, c.streams.video[0].height) == (512, 512)
    return video_s, audio_s


@pytest.fixture
def sim_gateway(run_gateway: Callable[..., Any], gateway_settings: Callable[..., Any]) -> Any:
    return run_gateway(gateway_settings())


def test_text_to_json_with_artifacts(sim_gateway: Any, sim: Any, tmp_path: Path) -> None:
    client = _client(sim_gateway)
    avatar_id = _avatar(client)
    r = client.post("/v1/talk", json={"text": "Tell me about the weather today.", "avatar_id": avatar_id})
    assert r.status_code == 200, r.text
    assert r.headers["x-talkgate-renderer"] == "procedural"
    assert r.headers["x-talkgate-provider"].startswith("bailian:")
    body = r.json()
    assert body["transcript"] == "Tell me about the weather today."
    assert body["reply"].strip() and body["renderer"] == "procedural"
    assert set(body["timings"]) == TIMING_KEYS
    t = body["timings"]
    assert t["asr_ms"] == 0 and 0 < t["first_video_ms"] <= t["total_ms"]
    assert t["llm_first_sentence_ms"] <= t["llm_ms"]
    video = client.get(body["video_url"])
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    _, audio_s = _check_mp4(video.content, tmp_path)
    assert abs(audio_s - body["duration_s"]) < 0.05
    audio = client.get(body["audio_url"])
    assert audio.status_code == 200 and audio.content[:4] == b"RIFF"
    # The reply spoken is the reply the LLM gave: the simulator saw one TTS request per sentence.
    spoken = [q for q in sim.requests("tts")]
    assert len(spoken) == len(body["sentences"]) >= 1


def test_sentences_are_spoken_while_the_reply_is_still_generated(sim_gateway: Any, sim: Any) -> None:
    answer = "The first sentence is short. Here comes a second one, a bit longer than the first. And a third."
    sim.control("PUT", "/sim/config", json={"answers": {"pipeline please": answer}, "token_delay_ms": 40})
    try:
        client = _client(sim_gateway)
        avatar_id = _avatar(client)
        r = client.post("/v1/talk", json={"text": "pipeline please", "avatar_id": avatar_id})
    finally:
        sim.control("DELETE", "/sim/config")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["reply"] == answer
    assert body["sentences"] == [
        "The first sentence is short.",
        "Here comes a second one, a bit longer than the first.",
        "And a third.",
    ]
    # One synthesis per sentence, in order, of exactly that sentence (the simulator logs its length).
    assert [q["text_chars"] for q in sim.requests("tts")] == [len(s) for s in body["sentences"]]
    t = body["timings"]
    # The first sentence's video was finished before the LLM stream ended: the stages overlap.
    assert t["llm_first_sentence_ms"] < t["first_video_ms"] < t["llm_ms"], t


def test_overhead_header_excludes_media_work(sim_gateway: Any) -> None:
    """x-talkgate-overhead-ms is the gateway's own time: face preparation, model calls and
    rendering (most of a talk request) are not in it."""
    client = _client(sim_gateway)
    image = base64.b64encode(astronaut_png()).decode()
    started = time.perf_counter()
    r = client.post("/v1/talk", json={"text": "Tell me about the weather today.", "image": image})
    total_ms = (time.perf_counter() - started) * 1000
    assert r.status_code == 200, r.text
    render_ms = r.json()["timings"]["render_ms"]
    overhead_ms = float(r.headers["x-talkgate-overhead-ms"])
    assert total_ms > render_ms > 0
    assert overhead_ms < 0.25 * total_ms and overhead_ms < 500, (overhead_ms, total_ms, render_ms)


def test_accept_mp4_returns_the_video(sim_gateway: Any, tmp_path: Path) -> None:
    client = _client(sim_gateway)
    r = client.post(
        "/v1/talk",
        json={"text": "Say hello.", "image": base64.b64encode(astronaut_png()).decode()},
        headers={"accept": "video/mp4"},
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "video/mp4"
    assert r.headers["x-talkgate-renderer"] == "procedural"
    video_s, _ = _check_mp4(r.content, tmp_path)
    assert abs(float(r.headers["x-talkgate-duration-s"]) - video_s) < 0.05


def test_wav2lip_checkpoint_is_used_when_configured(
    run_gateway: Callable[..., Any], gateway_settings: Callable[..., Any], sim: Any, tmp_path: Path
) -> None:
    torch = pytest.importorskip("torch")
    from lipsync.wav2lip import Wav2Lip

    ckpt = tmp_path / "wav2lip.pth"
    torch.manual_seed(0)
    state = {f"module.{k}": v for k, v in Wav2Lip().state_dict().items()}
    torch.save({"state_dict": state, "optimizer": None, "global_step": 0, "global_epoch": 0}, ckpt)
    sim.control("PUT", "/sim/config", json={"answers": {"greet me": "Hi there."}})
    try:
        client = _client(run_gateway(gateway_settings(wav2lip_checkpoint=ckpt, lipsync={"device": "cpu"})))
        r = client.post(
            "/v1/talk",
            json={"text": "greet me", "image": base64.b64encode(astronaut_png()).decode()},
            headers={"accept": "video/mp4"},
        )
    finally:
        sim.control("DELETE", "/sim/config")
    assert r.status_code == 200, r.text
    assert r.headers["x-talkgate-renderer"] == "wav2lip"
    _check_mp4(r.content, tmp_path)


def test_audio_question_is_transcribed_first(sim_gateway: Any, sim: Any, tmp_path: Path) -> None:
    client = _client(sim_gateway)
    r = client.post(
        "/v1/talk",
        files={
            "audio": ("q.wav", tone_wav(1.0, 16000, freq=220, peak=9830), "audio/wav"),
            "image": ("me.png", astronaut_png(), "image/png"),
        },
        data={"voice": "alloy"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["transcript"] and body["timings"]["asr_ms"] > 0
    assert sim.requests("asr")
    assert body["providers"]["asr"].startswith("bailian:")


def test_conversation_history_is_sent_back(sim_gateway: Any, sim: Any) -> None:
    client = _client(sim_gateway)
    avatar_id = _avatar(client)
    first = client.post(
        "/v1/talk", json={"text": "My name is Ada.", "avatar_id": avatar_id, "conversation_id": "c1"}
    )
    assert first.status_code == 200
    sim.clear_requests()
    second = client.post(
        "/v1/talk", json={"text": "What is my name?", "avatar_id": avatar_id, "conversation_id": "c1"}
    )
    assert second.status_code == 200
    sent = str(sim.requests("generation"))
    assert "My name is Ada." in sent and first.json()["reply"].split(".")[0] in sent


def test_client_errors(sim_gateway: Any) -> None:
    client = _client(sim_gateway)
    r = client.post("/v1/talk", json={"text": "hi", "avatar_id": "av_" + "0" * 32})
    assert r.status_code == 404 and r.json()["error"]["code"] == "avatar_not_found"
    r = client.post("/v1/talk", json={"text": "hi", "image": base64.b64encode(faceless_png()).decode()})
    assert r.status_code == 422 and r.json()["error"]["code"] == "no_face"
    assert "no face" in r.json()["error"]["message"]
    r = client.post("/v1/talk", json={"text": "   ", "image": base64.b64encode(astronaut_png()).decode()})
    assert r.status_code == 400 and r.json()["error"]["code"] == "empty_text"
    r = client.post("/v1/talk", json={"image": base64.b64encode(astronaut_png()).decode()})
    assert r.status_code == 400
    r = client.post("/v1/talk", json={"text": "hi"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "missing_avatar"
    r = client.post("/v1/talk", json={"text": "hi", "image": "%%%not base64"})
    assert r.status_code == 400
    r = client.post("/v1/talk", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert client.get("/v1/talk/artifacts/tk_" + "0" * 32 + ".mp4").status_code == 404
    assert client.get("/v1/talk/artifacts/..%2Fsecrets").status_code == 404


def _artifacts(settings_dir: Path) -> list[Path]:
    """Every artifact file, whichever tenant's sub-directory it is in."""
    root = settings_dir / "artifacts"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []


def test_llm_failure_mid_reply_renders_nothing(
    run_gateway: Callable[..., Any], gateway_settings: Callable[..., Any], sim: Any
) -> None:
    settings = gateway_settings()
    client = _client(run_gateway(settings))
    avatar_id = _avatar(client)
    sim.fault(service="generation", status=500, cut_after=2)
    r = client.post("/v1/talk", json={"text": "Tell me a long story please.", "avatar_id": avatar_id})
    assert r.status_code >= 500, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert "mid-reply" in r.json()["error"]["message"]
    assert _artifacts(settings.data_dir) == []
    assert sim.requests("tts") == [] or all("error" not in str(q).lower() for q in sim.requests("tts"))


def test_content_filter_is_not_spoken(
    run_gateway: Callable[..., Any], gateway_settings: Callable[..., Any], sim: Any
) -> None:
    settings = gateway_settings()
    client = _client(run_gateway(settings))
    avatar_id = _avatar(client)
    sim.fault(
        service="generation",
        status=400,
        code="DataInspectionFailed",
        message="Input data may contain inappropriate content.",
    )
    r = client.post("/v1/talk", json={"text": "something bad", "avatar_id": avatar_id})
    assert r.status_code == 400 and r.json()["error"]["code"] == "content_filter"
    assert sim.requests("tts") == []
    assert _artifacts(settings.data_dir) == []


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_artifacts_are_served_only_to_their_tenant(saas: Any) -> None:  # noqa: F811
    gw = saas()
    beta = gw.client(gw.create_key(tenant="beta", scopes=["talk"])["key"])
    gamma = gw.client(gw.create_key(tenant="gamma", scopes=["talk"])["key"])
    beta_again = gw.client(gw.create_key(tenant="beta", scopes=["talk"])["key"])
    image = base64.b64encode(astronaut_png()).decode()
    r = beta.post("/v1/talk", json={"text": "Hi.", "image": image}, timeout=120)
    assert r.status_code == 200, r.text
    urls = [r.json()["video_url"], r.json()["audio_url"]]
    for url in urls:
        assert beta.get(url).status_code == 200
        assert beta_again.get(url).status_code == 200  # the tenant's other keys may fetch it
        other = gamma.get(url)
        assert other.status_code == 404, other.text
        assert other.json()["error"]["code"] == "artifact_not_found"
        assert gw.client().get(url).status_code == 401  # anonymous while auth is on
        assert gw.admin.get(url).status_code == 404  # the admin key books as tenant "default"


def test_artifacts_expire(run_gateway: Callable[..., Any], gateway_settings: Callable[..., Any]) -> None:
    settings = gateway_settings(lipsync={"artifact_ttl_s": 1})
    client = _client(run_gateway(settings))
    r = client.post("/v1/talk", json={"text": "Hi.", "image": base64.b64encode(astronaut_png()).decode()})
    assert r.status_code == 200, r.text
    url = r.json()["video_url"]
    assert client.get(url).status_code == 200
    time.sleep(1.6)
    assert client.get(url).status_code == 404


@pytest.mark.slow
def test_local_models_offline(
    run_gateway: Callable[..., Any], gateway_settings: Callable[..., Any], tmp_path: Path
) -> None:
    """No DASHSCOPE key: whisper → SmolLM2 (llama.cpp) → piper, all local."""
    pytest.importorskip("llama_cpp")
    pytest.importorskip("piper")
    pytest.importorskip("faster_whisper")
    client = _client(run_gateway(gateway_settings(dashscope_api_key=None)), timeout=300)
    avatar_id = _avatar(client)
    r = client.post(
        "/v1/talk", json={"text": "Hello! Who are you?", "avatar_id": avatar_id, "max_tokens": 48}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["providers"]["chat"].startswith("local:") and body["providers"]["tts"].startswith("local:")
    assert body["reply"].strip()
    video = client.get(body["video_url"])
    _check_mp4(video.content, tmp_path, "local.mp4")
    # and a spoken question through local whisper
    speech = client.get(body["audio_url"]).content
    r2 = client.post(
        "/v1/talk",
        files={"audio": ("q.wav", speech, "audio/wav")},
        data={"avatar_id": avatar_id, "max_tokens": "32"},
        headers={"accept": "video/mp4"},
    )
    assert r2.status_code == 200, r2.text
    _check_mp4(r2.content, tmp_path, "local2.mp4")


def test_talk_usage_is_recorded_for_quotas(saas: Any, sim: Any) -> None:  # noqa: F811
    """One usage row per talk: video seconds, TTS characters and LLM tokens, all from this request."""
    gw = saas(saas={"usage_flush_interval_s": 0.05})
    key = gw.create_key(tenant="acme", scopes=["talk", "avatars"])["key"]
    client = gw.client(key)
    avatar_id = _avatar(client)
    r = client.post("/v1/talk", json={"text": "Tell me about the weather today.", "avatar_id": avatar_id})
    assert r.status_code == 200, r.text
    body = r.json()
    generation = [q for q in sim.requests("generation")]
    assert len(generation) == 1
    deadline = time.monotonic() + 10
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        params = {"group_by": "route", "bucket": "day", "tenant": "acme"}
        rows = gw.admin.get("/admin/usage", params=params).json()["data"]
        if any(row["group"] == "/v1/talk" for row in rows):
            break
        time.sleep(0.05)
    talk = [row for row in rows if row["group"] == "/v1/talk"]
    assert len(talk) == 1, rows
    row = talk[0]
    assert row["requests"] == 1
    assert abs(row["video_seconds"] - body["duration_s"]) < 0.01
    assert row["characters"] == sum(len(s) for s in body["sentences"]) > 0
    assert row["tokens_out"] > 0 and row["tokens_in"] > 0
    # The model column holds what the client asked for ("default": no model given, the chat chain).
    models = gw.admin.get("/admin/usage", params={"group_by": "model", "tenant": "acme"}).json()["data"]
    assert {r["group"]: r["requests"] for r in models} == {None: 1, "default": 1}  # the avatar, the talk
    asked = client.post(
        "/v1/talk", json={"text": "Hi.", "avatar_id": avatar_id, "model": "qwen-turbo", "max_tokens": 8}
    )
    assert asked.status_code == 200, asked.text
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        models = gw.admin.get("/admin/usage", params={"group_by": "model", "tenant": "acme"}).json()["data"]
        if "qwen-turbo" in {r["group"] for r in models}:
            break
        time.sleep(0.05)
    assert {r["group"]: r["requests"] for r in models} == {None: 1, "default": 1, "qwen-turbo": 1}
