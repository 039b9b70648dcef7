"""Qwen-TTS voice cloning on the simulator (model ``qwen-voice-enrollment``, raw HTTP: the SDK has no
client for its actions), then synthesis with the cloned voice through the official SDK's
``MultiModalConversation``."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest
from dashscope import MultiModalConversation

from providers.wav import float_to_pcm16
from tests.conftest import SimHandle
from tests.sounds import speechlike, wav_of

PATH = "/api/v1/services/audio/tts/customization"
TARGET = "qwen3-tts-vc-2026-01-22"


def sample_uri(seconds: float = 6.0, rate: int = 24000) -> str:
    pcm = float_to_pcm16(speechlike(seconds, rate)).tobytes()
    return "data:audio/wav;base64," + base64.b64encode(wav_of(pcm, rate)).decode()


def raw(sim: SimHandle, payload: dict[str, Any]) -> httpx.Response:
    body = {"model": "qwen-voice-enrollment", "input": payload}
    return httpx.post(
        f"{sim.url}{PATH}", json=body, headers={"Authorization": f"Bearer {sim.api_key}"}, timeout=10
    )


def names(sim: SimHandle) -> list[str]:
    out = raw(sim, {"action": "list", "page_size": 100}).json()["output"]
    return [v["voice"] for v in out["voice_list"]]


def create(sim: SimHandle, **fields: Any) -> httpx.Response:
    payload = {
        "action": "create",
        "target_model": TARGET,
        "preferred_name": "jane",
        "audio": {"data": sample_uri()},
    }
    return raw(sim, {**payload, **fields})


def test_create_list_speak_and_delete(ds: SimHandle) -> None:
    r = create(ds)
    assert r.status_code == 200, r.text
    out = r.json()["output"]
    voice = out["voice"]
    assert voice.startswith("qwen-tts-vc-jane-voice-") and out["target_model"] == TARGET
    listed = raw(ds, {"action": "list", "page_index": 0, "page_size": 10}).json()["output"]["voice_list"]
    assert listed[0]["voice"] == voice and listed[0]["target_model"] == TARGET  # newest first

    spoken = MultiModalConversation.call(model=TARGET, text="Hello in my own voice.", voice=voice)
    assert spoken.status_code == 200 and spoken.output["audio"]["url"]
    wrong_model = MultiModalConversation.call(model="qwen3-tts-flash", text="Hello.", voice=voice)
    assert wrong_model.status_code == 400 and TARGET in wrong_model.message

    assert raw(ds, {"action": "delete", "voice": voice}).status_code == 200
    assert voice not in names(ds)
    gone = MultiModalConversation.call(model=TARGET, text="Still there?", voice=voice)
    assert gone.status_code == 400 and "does not exist" in gone.message
    again = raw(ds, {"action": "delete", "voice": voice})
    assert again.status_code == 400 and again.json()["code"] == "InvalidParameter"


@pytest.mark.parametrize(
    ("fields", "status", "says"),
    [
        ({"target_model": "cosyvoice-v2"}, 400, "does not support voice cloning"),
        ({"preferred_name": "far_too_long_a_name"}, 400, "at most 16 characters"),
        ({"preferred_name": "bad-name"}, 400, "at most 16 characters"),
        ({"audio": {"data": sample_uri(rate=16000)}}, 400, "24000 Hz"),
        ({"audio": {"data": sample_uri(seconds=1.0)}}, 400, "outside [3, 60]s"),
        ({"audio": {"data": "https://example.com/me.wav"}}, 415, "Download the media resource"),
        ({"audio": {"data": "data:audio/wav;base64,@@@"}}, 400, "not valid base64"),
        ({"audio": {}}, 400, "audio.data is required"),
    ],
)
def test_create_refusals(ds: SimHandle, fields: dict[str, Any], status: int, says: str) -> None:
    before = names(ds)
    r = create(ds, **fields)
    assert r.status_code == status and says in r.json()["message"], r.text
    assert names(ds) == before
