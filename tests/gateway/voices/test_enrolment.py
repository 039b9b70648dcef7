"""/v1/voices end to end: a real gateway (auth on) over the simulator's enrollment API, with real
recordings made in the test (the packaged piper voice reads the statement), the consent
transcribed by the local Whisper through the router, and Resemblyzer's speaker check."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable
from typing import Any

import pytest

from gateway.settings import RouteConfig, _default_routes
from gateway.voices import speaker
from providers.wav import float_to_pcm16, resample
from tests.conftest import SimHandle
from tests.gateway.saas_support import Gateway, database_url, query, saas  # noqa: F401
from tests.sounds import piper_speech, wav_of

pytestmark = pytest.mark.slow

SAMPLE_TEXT = (
    "Good morning and welcome. This short recording is my voice sample: I read it slowly and clearly, "
    "so that a faithful copy of my voice can greet our customers."
)
PURPOSE = "customer service greetings"


def wav(text: str, speed: float = 1.0) -> bytes:
    """``text`` read by the piper voice; ``speed`` > 1 plays it faster, raising pitch and formants
    together (a clearly different synthetic voice)."""
    samples, rate = piper_speech(text)
    if speed != 1.0:
        samples = resample(samples, rate, round(rate / speed))
    return wav_of(float_to_pcm16(samples).tobytes(), rate)


@pytest.fixture
def gw(saas: Callable[..., Gateway]) -> Gateway:  # noqa: F811
    routes = _default_routes()
    routes["asr"] = RouteConfig(chain=["local:whisper-tiny.en"], aliases={"default": "whisper-tiny.en"})
    return saas(routes=routes, voice_cloning={"operator_name": "Talkgate", "poll_interval_s": 0.05})


def statement(client: Any, purpose: str = PURPOSE) -> dict[str, Any]:
    r = client.get("/v1/voices/consent", params={"purpose": purpose, "speaker": "Jane"})
    assert r.status_code == 200, r.text
    return r.json()


def enrol(client: Any, code: str, sample: bytes, consent: bytes, **fields: str) -> Any:
    files = {"sample": ("sample.wav", sample, "audio/wav"), "consent": ("consent.wav", consent, "audio/wav")}
    return client.post("/v1/voices", data={"code": code, **fields}, files=files, timeout=300)


def creates(sim: SimHandle) -> list[dict[str, Any]]:
    return [
        r for r in sim.requests("tts")
        if r.get("path", "").endswith("/customization") and (r.get("body") or {}).get("input", {}).get("action") == "create_voice"
    ]  # fmt: skip


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_enrol_use_audit_and_revoke(gw: Gateway, sim: SimHandle) -> None:
    acme = gw.client(gw.create_key("acme", ["voices", "tts"])["key"])
    globex = gw.client(gw.create_key("globex", ["voices", "tts"])["key"])
    st = statement(acme)
    assert st["tenant"] == "acme" and PURPOSE in st["statement"] and " ".join(st["code"]) in st["statement"]
    sample, consent = wav(SAMPLE_TEXT), wav(st["statement"])

    r = enrol(acme, st["code"], sample, consent, name="Jane", fallback="refuse")
    assert r.status_code == 201, r.text
    voice = r.json()
    assert voice["status"] == "active" and voice["voice"] == f"custom:{voice['id']}"
    assert voice["target_model"] == "cosyvoice-v2" and voice["provider_status"] == "OK"

    # a retried request finds its record: same voice, and still one provider voice
    again = enrol(acme, st["code"], sample, consent, name="Jane", fallback="refuse")
    assert again.status_code == 200 and again.json()["id"] == voice["id"]
    assert again.headers["x-talkgate-idempotent-replay"] == "true"
    assert len(creates(sim)) == 1

    detail = acme.get(f"/v1/voices/{voice['id']}").json()
    record = detail["consent"]
    checks = record["checks"]
    assert (
        record["statement"] == st["statement"]
        and record["purpose"] == PURPOSE
        and record["code"] == st["code"]
    )
    assert len(record["sample_sha256"]) == 64 and record["sample_sha256"] != record["consent_sha256"]
    assert checks["consent_transcript"]["ok"] and checks["consent_transcript"]["score"] >= 0.8
    assert checks["consent_transcript"]["asr_provider"] == "local:whisper-tiny.en"
    assert checks["sample_speech"]["ok"] and checks["sample_speech"]["method"] == "silero"
    if speaker.available():
        assert checks["speaker"]["status"] == "checked" and checks["speaker"]["similarity"] >= 0.8
    provider_voice = record["provider_voice_id"]
    assert provider_voice.startswith("cosyvoice-v2-tg")

    # speaking with it: the provider gets the enrolled id and its model; the file is labelled
    sim.clear_requests()
    r = acme.post("/v1/audio/speech", json={"model": "tts-1", "input": "Hello from my own voice.",
                                             "voice": voice["voice"], "response_format": "wav"})  # fmt: skip
    assert r.status_code == 200, r.text
    assert (
        r.headers["x-talkgate-consent-id"] == voice["id"] and r.headers["x-talkgate-voice-fallback"] == "none"
    )
    assert r.headers["x-talkgate-ai-generated"].startswith("true")
    run = [
        q for q in sim.requests("tts") if (q.get("body") or {}).get("header", {}).get("action") == "run-task"
    ]
    assert run and run[-1]["body"]["payload"]["parameters"]["voice"] == provider_voice
    assert run[-1]["body"]["payload"]["model"] == "cosyvoice-v2"

    # another tenant can neither see, use nor delete it
    assert globex.get(f"/v1/voices/{voice['id']}").status_code == 404
    assert globex.get("/v1/voices").json()["data"] == []
    assert (
        globex.post(
            "/v1/audio/speech", json={"model": "tts-1", "input": "hi", "voice": voice["voice"]}
        ).status_code
        == 404
    )
    assert globex.delete(f"/v1/voices/{voice['id']}").status_code == 404

    # revocation: refused at once, deleted at the provider
    d = acme.delete(f"/v1/voices/{voice['id']}")
    assert d.status_code == 200 and d.json()["provider_deleted"] is True
    r = acme.post("/v1/audio/speech", json={"model": "tts-1", "input": "Still me?", "voice": voice["voice"]})
    assert r.status_code == 403 and r.json()["error"]["code"] == "voice_not_usable"
    prefix = provider_voice.split("-")[2]  # cosyvoice-v2-<prefix>-<hex>
    listed = sim.control(
        "POST", "/api/v1/services/audio/tts/customization",
        json={"model": "voice-enrollment", "input": {"action": "list_voice", "prefix": prefix}},
        headers={"Authorization": f"Bearer {sim.api_key}"},
    )  # fmt: skip
    assert listed.json()["output"]["voice_list"] == []

    # the auditor's export: the consent record and every event
    consent_csv = gw.admin.get("/admin/voices/consent", params={"format": "csv", "tenant": "acme"})
    rows = list(csv.DictReader(io.StringIO(consent_csv.text)))
    assert [row["id"] for row in rows] == [voice["id"]] and rows[0]["status"] == "revoked"
    assert rows[0]["consent_sha256"] == record["consent_sha256"] and rows[0]["use_count"] == "1"
    events = gw.admin.get("/admin/voices/audit", params={"voice_id": voice["id"]}).json()["data"]
    kinds = [e["event"] for e in events]
    assert kinds[:3] == ["enrol", "provider_create", "ready"] and "use" in kinds
    assert kinds[-2:] == ["revoke", "provider_delete"]
    use = next(e for e in events if e["event"] == "use")
    assert use["detail"]["route"] == "speech" and len(use["detail"]["text_sha256"]) == 64
    assert all(e["ts"] and e["tenant"] == "acme" for e in events)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_refusals_before_anything_reaches_the_cloud(gw: Gateway, sim: SimHandle) -> None:
    acme = gw.client(gw.create_key("acme", ["voices"])["key"])
    sample = wav(SAMPLE_TEXT)

    # the consent recording reads another text: the transcript does not match
    st = statement(acme)
    wrong = wav("I am reading something else entirely, about the weather and the train timetable.")
    r = enrol(acme, st["code"], sample, wrong)
    assert r.status_code == 422 and "consent_transcript" in r.json()["error"]["message"]

    # a different (synthetic) voice reads the right statement: the speaker check refuses it
    if speaker.available():
        r = enrol(acme, st["code"], sample, wav(st["statement"], speed=1.3))
        assert r.status_code == 422, r.text
        assert "speaker: the two recordings are not the same voice" in r.json()["error"]["message"]

    # no speech in the sample; an unknown code; not audio at all
    silence = wav_of(b"\x00\x00" * 16000 * 8, 16000)
    r = enrol(acme, st["code"], silence, wav(st["statement"]))
    assert r.status_code == 422 and "sample_speech" in r.json()["error"]["message"]
    r = enrol(acme, "000000", sample, wav(st["statement"]))
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_consent_code"
    r = enrol(acme, st["code"], b"not audio at all", sample)
    assert r.status_code == 400 and r.json()["error"]["param"] == "sample"
    assert creates(sim) == []
    assert acme.get("/v1/voices").json()["data"] == []


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_fallback_policy_when_the_cloud_tts_fails(gw: Gateway, sim: SimHandle) -> None:
    acme = gw.client(gw.create_key("acme", ["voices", "tts"])["key"])
    sample = wav(SAMPLE_TEXT)
    voices = {}
    for policy in ("local", "refuse"):
        st = statement(acme)
        r = enrol(acme, st["code"], sample, wav(st["statement"]), fallback=policy)
        assert r.status_code == 201, r.text
        voices[policy] = r.json()["voice"]
    sim.fault(service="tts", model="cosyvoice-v2", status=503, times=100)
    r = acme.post(
        "/v1/audio/speech", json={"model": "tts-1", "input": "Hello there.", "voice": voices["local"]}
    )
    assert r.status_code == 200 and r.headers["x-talkgate-voice-fallback"] == "local"
    r = acme.post(
        "/v1/audio/speech", json={"model": "tts-1", "input": "Hello there.", "voice": voices["refuse"]}
    )
    assert r.status_code >= 500 and "refuses a local fallback" in r.text


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_voice_under_review_is_pending_until_the_provider_approves_it(
    saas: Callable[..., Gateway],  # noqa: F811
    sim: SimHandle,
) -> None:
    routes = _default_routes()
    routes["asr"] = RouteConfig(chain=["local:whisper-tiny.en"], aliases={"default": "whisper-tiny.en"})
    gw = saas(routes=routes, voice_cloning={"inline_wait_s": 0.0, "poll_interval_s": 0.05})
    sim.control("PUT", "/sim/config", json={"voice_review_ms": 1500}).raise_for_status()
    acme = gw.client(gw.create_key("acme", ["voices", "tts"])["key"])
    st = statement(acme)
    r = enrol(acme, st["code"], wav(SAMPLE_TEXT), wav(st["statement"]))
    assert r.status_code == 202, r.text
    voice = r.json()
    assert voice["status"] == "pending" and voice["provider_status"] == "DEPLOYING"
    r = acme.post("/v1/audio/speech", json={"model": "tts-1", "input": "Too early.", "voice": voice["voice"]})
    assert r.status_code == 403 and "under review" in r.json()["error"]["message"]
    time.sleep(1.6)
    assert acme.get(f"/v1/voices/{voice['id']}").json()["status"] == "active"
    r = acme.post(
        "/v1/audio/speech", json={"model": "tts-1", "input": "Now it works.", "voice": voice["voice"]}
    )
    assert r.status_code == 200


QWEN_TARGET = "qwen3-tts-vc-2026-01-22"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_qwen_tts_voice_is_enrolled_used_and_revoked(
    saas: Callable[..., Gateway],  # noqa: F811
    sim: SimHandle,
) -> None:
    """The same consent flow with ``target_model`` a Qwen-TTS clone model: enrolled through
    ``qwen-voice-enrollment`` (usable at once, once on retries), spoken by that model over HTTP,
    deleted at the provider on revocation."""
    routes = _default_routes()
    routes["asr"] = RouteConfig(chain=["local:whisper-tiny.en"], aliases={"default": "whisper-tiny.en"})
    gw = saas(routes=routes, voice_cloning={"target_model": QWEN_TARGET, "poll_interval_s": 0.05})
    acme = gw.client(gw.create_key("acme", ["voices", "tts"])["key"])
    st = statement(acme)
    sample, consent = wav(SAMPLE_TEXT), wav(st["statement"])
    r = enrol(acme, st["code"], sample, consent, fallback="refuse")
    assert r.status_code == 201, r.text
    voice = r.json()
    assert voice["status"] == "active" and voice["target_model"] == QWEN_TARGET
    again = enrol(acme, st["code"], sample, consent, fallback="refuse")
    assert again.status_code == 200 and again.json()["id"] == voice["id"]
    made = [
        q["body"]["input"] for q in sim.requests("tts")
        if (q.get("body") or {}).get("model") == "qwen-voice-enrollment" and q["body"]["input"]["action"] == "create"
    ]  # fmt: skip
    assert len(made) == 1 and made[0]["target_model"] == QWEN_TARGET
    provider_voice = acme.get(f"/v1/voices/{voice['id']}").json()["consent"]["provider_voice_id"]
    assert provider_voice.startswith(f"qwen-tts-vc-{made[0]['preferred_name']}-voice-")

    sim.clear_requests()
    r = acme.post("/v1/audio/speech", json={"model": "tts-1", "input": "Hello from my own voice.",
                                             "voice": voice["voice"], "response_format": "wav"})  # fmt: skip
    assert r.status_code == 200, r.text
    assert (
        r.headers["x-talkgate-consent-id"] == voice["id"] and r.headers["x-talkgate-voice-fallback"] == "none"
    )
    spoken = [
        q["body"]
        for q in sim.requests("tts")
        if q.get("path", "").endswith("/multimodal-generation/generation")
    ]
    assert spoken and spoken[-1]["model"] == QWEN_TARGET and spoken[-1]["input"]["voice"] == provider_voice

    d = acme.delete(f"/v1/voices/{voice['id']}")
    assert d.status_code == 200 and d.json()["provider_deleted"] is True
    listed = sim.control(
        "POST", "/api/v1/services/audio/tts/customization",
        json={"model": "qwen-voice-enrollment", "input": {"action": "list", "page_size": 100}},
        headers={"Authorization": f"Bearer {sim.api_key}"},
    )  # fmt: skip
    assert listed.status_code == 200 and all(
        v["voice"] != provider_voice for v in listed.json()["output"]["voice_list"]
    )
    r = acme.post("/v1/audio/speech", json={"model": "tts-1", "input": "Still me?", "voice": voice["voice"]})
    assert r.status_code == 403 and r.json()["error"]["code"] == "voice_not_usable"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_consent_transcription_is_charged_to_the_tenant(gw: Gateway, database_url: str) -> None:  # noqa: F811
    for tenant, seconds in (("acme", 5), ("globex", 15)):
        r = gw.admin.post(
            "/admin/tenants", json={"id": tenant, "name": tenant, "quotas": {"asr_seconds": seconds}}
        )
        assert r.status_code in (200, 201), r.text
    acme = gw.client(gw.create_key("acme", ["voices"])["key"])
    globex = gw.client(gw.create_key("globex", ["voices"])["key"])
    router = gw.services.router
    transcribed: list[float] = []
    real = router.transcribe

    async def transcribe(request: Any, ctx: Any, *args: Any, **kw: Any) -> Any:
        transcribed.append(request.audio.duration_s)
        return await real(request, ctx, *args, **kw)

    router.transcribe = transcribe
    sample = wav(SAMPLE_TEXT)

    # the consent recording (~10 s) does not fit a 5 s quota: 429 before any ASR, the code unused
    st = statement(acme)
    r = enrol(acme, st["code"], sample, wav(st["statement"]))
    assert r.status_code == 429 and r.json()["error"]["code"] == "insufficient_quota", r.text
    assert "ASR seconds" in r.json()["error"]["message"]
    assert transcribed == []
    assert acme.get("/v1/voices").json()["data"] == []

    # within the quota: the transcribed seconds are on this request's usage row, with the ASR target
    st = statement(globex)
    consent = wav(st["statement"])
    r = enrol(globex, st["code"], sample, consent)
    assert r.status_code == 201, r.text
    assert len(transcribed) == 1 and 7.5 < transcribed[0] <= 15  # two would not fit in 15 s
    gw.admin.get("/admin/usage")  # flushes the buffered rows
    rows = query(
        database_url,
        "SELECT request_id, provider, model, audio_seconds, status FROM usage_records "
        "WHERE tenant = 'globex' AND route = '/v1/voices'",
    )
    assert len(rows) == 1, rows
    request_id, provider, model, seconds, status = rows[0]
    assert (provider, model, status) == ("local:whisper-tiny.en", "whisper-tiny.en", 201)
    assert seconds == pytest.approx(transcribed[0], abs=1e-3)
    # ... which the voice's consent record and audit log name
    voice = globex.get(f"/v1/voices/{r.json()['id']}").json()
    assert voice["consent"]["checks"]["consent_transcript"]["asr_seconds"] == pytest.approx(seconds, abs=1e-3)
    events = gw.admin.get("/admin/voices/audit", params={"voice_id": voice["id"]}).json()["data"]
    assert events[0]["event"] == "enrol" and events[0]["detail"]["request_id"] == request_id
    # and the tenant's quota counts it: a second enrolment no longer fits the 15 s
    st = statement(globex)
    r = enrol(globex, st["code"], sample, wav(st["statement"]))
    assert r.status_code == 429 and r.json()["error"]["code"] == "insufficient_quota", r.text
    assert len(transcribed) == 1
