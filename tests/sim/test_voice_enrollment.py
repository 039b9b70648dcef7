"""CosyVoice voice enrollment on the simulator, driven by the official dashscope SDK (and raw HTTP
for the error cases the SDK hides), then synthesis with the enrolled voice id."""

from __future__ import annotations

import base64
import secrets
import time
from typing import Any

import httpx
import pytest
from dashscope.audio.tts_v2 import (
    AudioFormat,
    SpeechSynthesizer,
    VoiceEnrollmentException,
    VoiceEnrollmentService,
)
from dashscope.common.error import RequestFailure

from providers.wav import float_to_pcm16
from tests.conftest import SimHandle
from tests.sounds import speechlike, wav_of

PATH = "/api/v1/services/audio/tts/customization"


def sample_uri(seconds: float = 6.0) -> str:
    pcm = float_to_pcm16(speechlike(seconds, 24000)).tobytes()
    return "data:audio/wav;base64," + base64.b64encode(wav_of(pcm, 24000)).decode()


def synth(model: str, voice: str) -> SpeechSynthesizer:
    return SpeechSynthesizer(model=model, voice=voice, format=AudioFormat.WAV_22050HZ_MONO_16BIT)


def prefix() -> str:
    return "t" + secrets.token_hex(3)


def raw(sim: SimHandle, payload: dict[str, Any], model: str = "voice-enrollment") -> httpx.Response:
    body = {"model": model, "input": payload, "parameters": {}}
    headers = {"Authorization": f"Bearer {sim.api_key}"}
    return httpx.post(f"{sim.url}{PATH}", json=body, headers=headers, timeout=10)


def test_create_review_list_query_update_delete_with_the_sdk(ds: SimHandle) -> None:
    ds.control("PUT", "/sim/config", json={"voice_review_ms": 300}).raise_for_status()
    service = VoiceEnrollmentService()
    p = prefix()
    voice_id = service.create_voice(target_model="cosyvoice-v2", prefix=p, url=sample_uri())
    assert voice_id.startswith(f"cosyvoice-v2-{p}-")
    assert service.query_voice(voice_id)["status"] == "DEPLOYING"
    time.sleep(0.4)
    queried = service.query_voice(voice_id)
    assert queried["status"] == "OK" and queried["target_model"] == "cosyvoice-v2"
    listed = service.list_voices(prefix=p)
    assert [v["voice_id"] for v in listed] == [voice_id] and listed[0]["status"] == "OK"
    service.update_voice(voice_id, sample_uri(7.0))
    assert service.query_voice(voice_id)["status"] == "DEPLOYING"  # a new sample is reviewed again
    service.delete_voice(voice_id)
    assert service.list_voices(prefix=p) == []
    with pytest.raises(VoiceEnrollmentException):
        service.query_voice(voice_id)


def test_rejected_review_ends_undeployed(ds: SimHandle) -> None:
    ds.control("PUT", "/sim/config", json={"voice_review_outcome": "UNDEPLOYED"}).raise_for_status()
    service = VoiceEnrollmentService()
    voice_id = service.create_voice(target_model="cosyvoice-v2", prefix=prefix(), url=sample_uri())
    assert service.query_voice(voice_id)["status"] == "UNDEPLOYED"


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        ({"action": "create_voice", "target_model": "qwen-plus", "prefix": "abc", "url": "x"}, 400, "InvalidParameter"),
        ({"action": "create_voice", "target_model": "cosyvoice-v2", "prefix": "bad-prefix!", "url": "x"}, 400,
         "InvalidParameter"),
        ({"action": "create_voice", "target_model": "cosyvoice-v2", "prefix": "abc",
          "url": "https://example.com/a.wav"}, 415, "BadRequest.InputDownloadFailed"),
        ({"action": "create_voice", "target_model": "cosyvoice-v2", "prefix": "abc",
          "url": "data:audio/wav;base64,AAAA"}, 415, "BadRequest.UnsupportedFileFormat"),
        ({"action": "query_voice", "voice_id": "cosyvoice-v2-nope-00000000"}, 400, "InvalidParameter"),
        ({"action": "fly"}, 400, "InvalidParameter"),
    ],
)  # fmt: skip
def test_errors_carry_bailian_codes(sim: SimHandle, payload: dict[str, Any], status: int, code: str) -> None:
    r = raw(sim, payload)
    assert r.status_code == status, r.text
    assert r.json()["code"] == code and r.json()["request_id"]


def test_too_short_sample_and_unknown_model_are_refused(sim: SimHandle) -> None:
    r = raw(
        sim,
        {"action": "create_voice", "target_model": "cosyvoice-v2", "prefix": "abc", "url": sample_uri(1.0)},
    )
    assert r.status_code == 400 and "duration" in r.json()["message"]
    r = raw(sim, {"action": "list_voice"}, model="voice-enrolment")
    assert r.status_code == 404 and r.json()["code"] == "ModelNotFound"


def test_account_voice_limit(sim: SimHandle) -> None:
    count = len(raw(sim, {"action": "list_voice", "page_size": 10000}).json()["output"]["voice_list"])
    sim.control("PUT", "/sim/config", json={"voice_limit": count + 1}).raise_for_status()
    first = raw(
        sim,
        {"action": "create_voice", "target_model": "cosyvoice-v2", "prefix": prefix(), "url": sample_uri()},
    )
    assert first.status_code == 200
    second = raw(
        sim,
        {"action": "create_voice", "target_model": "cosyvoice-v2", "prefix": prefix(), "url": sample_uri()},
    )
    assert second.status_code == 429 and second.json()["code"] == "Throttling.AllocationQuota"
    voice_id = first.json()["output"]["voice_id"]
    assert raw(sim, {"action": "delete_voice", "voice_id": voice_id}).status_code == 200


def test_synthesis_with_an_enrolled_voice_follows_its_status_and_model(ds: SimHandle) -> None:
    ds.control("PUT", "/sim/config", json={"voice_review_ms": 400}).raise_for_status()
    service = VoiceEnrollmentService()
    voice_id = service.create_voice(target_model="cosyvoice-v2", prefix=prefix(), url=sample_uri())
    with pytest.raises(RequestFailure, match="not ready"):
        synth("cosyvoice-v2", voice_id).call("Hello there.")
    time.sleep(0.5)
    audio = synth("cosyvoice-v2", voice_id).call("Hello there, this is my voice.")
    assert audio and len(audio) > 1000
    with pytest.raises(RequestFailure, match="enrolled for cosyvoice-v2"):
        synth("cosyvoice-v1", voice_id).call("Hello there.")
    service.delete_voice(voice_id)
    with pytest.raises(RequestFailure, match="not a supported voice"):
        synth("cosyvoice-v2", voice_id).call("Hello there.")
