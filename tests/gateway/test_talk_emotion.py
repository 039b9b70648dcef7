"""/v1/talk with emotion: the LLM's leading tag drives the voice (CosyVoice run-task parameters on
the simulator's wire, piper's tempo and loudness on the local fallback) and never reaches the TTS
text, the reply or the transcript; produced MP4/WAV carry the AI-generated label."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import av
import httpx
import numpy as np
import pytest

from providers.wav import read_wav
from tests.lipsync.media import astronaut_png

ANSWERS = {
    "how did my exam go": "[emotion:happy] Congratulations, you passed! That is wonderful news.",
    "my cat is ill": "I'm so sorry to hear that. Don't worry, it's okay to feel this way.",
    "read the news": "The store opens at nine. It closes at six in the evening.",
}


@dataclass
class Spy:
    """Records what the talk pipeline hands the router's TTS (the calls still go through)."""

    requests: list[Any] = field(default_factory=list)


@pytest.fixture
def talk(run_gateway: Callable[..., Any], gateway_settings: Callable[..., Any], sim: Any) -> Iterator[Any]:
    sim.control("PUT", "/sim/config", json={"answers": ANSWERS}).raise_for_status()
    server = run_gateway(gateway_settings())
    services = server.server.config.app.state.services
    spy = Spy()
    real = services.router.synthesize

    async def synthesize(request: Any, ctx: Any, skip: Any = None) -> Any:
        spy.requests.append(request)
        return await real(request, ctx, skip=skip)

    services.router.synthesize = synthesize
    client = httpx.Client(base_url=server.url, timeout=180)
    r = client.post("/v1/avatars", files={"image": ("me.png", astronaut_png(), "image/png")})
    assert r.status_code == 201, r.text
    yield client, r.json()["id"], spy
    client.close()


def run_tasks(sim: Any) -> list[dict[str, Any]]:
    return [
        q["body"]["payload"]["parameters"]
        for q in sim.requests("tts")
        if (q.get("body") or {}).get("header", {}).get("action") == "run-task"
    ]


def test_tag_drives_cosyvoice_and_is_stripped_everywhere(talk: Any, sim: Any) -> None:
    client, avatar_id, spy = talk
    r = client.post("/v1/talk", json={"text": "How did my exam go", "avatar_id": avatar_id})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["emotion"], body["emotion_source"]) == ("happy", "tag")
    assert r.headers["x-talkgate-emotion"] == "happy; source=tag"
    assert body["reply"] == "Congratulations, you passed! That is wonderful news."
    assert not any("emotion" in s or "[" in s for s in body["sentences"])
    assert spy.requests and not any("[" in q.text or "emotion" in q.text for q in spy.requests)
    params = run_tasks(sim)
    assert len(params) == len(spy.requests)
    for p in params:
        assert p["instruction"] == "你正在进行闲聊互动，你说话的情感是happy。"
        assert (p["rate"], p["pitch"], p["volume"]) == (1.08, 1.05, 58)
    # the video and the audio artifact are labelled
    assert r.headers["x-talkgate-ai-generated"].startswith("true; producer=talkgate")
    video = client.get(body["video_url"])
    with av.open(io.BytesIO(video.content)) as c:
        assert c.metadata["comment"].startswith("AI-generated; producer=talkgate")
    wav = client.get(body["audio_url"]).content
    with av.open(io.BytesIO(wav)) as c:
        assert c.metadata["comment"].startswith("AI-generated")


def test_lexicon_fallback_and_explicit_choices(talk: Any, sim: Any) -> None:
    client, avatar_id, _ = talk
    r = client.post("/v1/talk", json={"text": "My cat is ill", "avatar_id": avatar_id})
    assert (r.json()["emotion"], r.json()["emotion_source"]) == ("gentle", "lexicon")
    assert run_tasks(sim)[-1]["instruction"].endswith("情感是neutral。")  # CosyVoice has no "gentle"
    assert run_tasks(sim)[-1]["rate"] == 0.93

    sim.clear_requests()
    r = client.post("/v1/talk", json={"text": "Read the news", "avatar_id": avatar_id, "emotion": "sad"})
    assert (r.json()["emotion"], r.json()["emotion_source"]) == ("sad", "request")
    assert all(p["instruction"].endswith("情感是sad。") and p["rate"] == 0.9 for p in run_tasks(sim))

    sim.clear_requests()
    r = client.post("/v1/talk", json={"text": "Read the news", "avatar_id": avatar_id, "emotion": "off"})
    assert r.json()["emotion_source"] == "off"
    assert all("instruction" not in p and p["rate"] == 1.0 and p["volume"] == 50 for p in run_tasks(sim))
    assert client.post(
        "/v1/talk", json={"text": "x", "avatar_id": avatar_id, "emotion": "sarcastic"}
    ).status_code in (
        400,
        422,
    )


@pytest.mark.slow
def test_piper_fallback_gets_tempo_and_loudness(talk: Any, sim: Any) -> None:
    client, avatar_id, _ = talk
    sim.fault(service="tts", status=503, times=1000)
    # A longer reply, so piper's sampled phoneme durations and noise average out over many words.
    news = (
        "Here is the news for today. The city council met this morning to discuss the new park. "
        "Rain is expected in the afternoon, so take an umbrella. The museum opens late on Friday."
    )
    sim.control("PUT", "/sim/config", json={"answers": {"Read the news": news}}).raise_for_status()
    measured = {}
    for emotion in ("neutral", "sad"):
        r = client.post(
            "/v1/talk", json={"text": "Read the news", "avatar_id": avatar_id, "emotion": emotion}
        )
        assert r.status_code == 200, r.text
        assert r.json()["providers"]["tts"].startswith("local:")
        pcm, rate = read_wav(client.get(r.json()["audio_url"]).content)
        x = np.frombuffer(pcm, "<i2").astype(np.float64) / 32768
        # Loudness: RMS of the louder half of 20 ms frames (piper samples noise, so single peaks
        # vary from run to run; the voiced frames' level follows the volume factor closely).
        frames = x[: len(x) // (rate // 50) * (rate // 50)].reshape(-1, rate // 50)
        rms = np.sqrt(np.mean(frames**2, axis=1))
        voiced = rms[rms >= np.median(rms)]
        measured[emotion] = (float(np.sqrt(np.mean(voiced**2))), len(x) / rate)
    (loud_n, dur_n), (loud_s, dur_s) = measured["neutral"], measured["sad"]
    assert loud_s == pytest.approx(0.7 * loud_n, rel=0.12), measured  # piper volume 0.7
    # tempo 0.9 (piper length_scale / 0.9): this voice speaks about 4 % longer (measured: 4.69 s ->
    # 4.84-4.90 s for one sentence); piper samples durations, so the margin is kept at 2 %
    assert dur_s > dur_n * 1.02, measured
