"""Qwen-TTS voice cloning on the customization endpoint (model ``qwen-voice-enrollment``).

Wire shapes follow reference/voice-emotion.md §1.10: the actions ``create`` (``target_model``,
``preferred_name``, ``audio.data``), ``list`` (``page_index``, ``page_size``) and ``delete``
(``voice``). A created voice is usable at once (no review), named
``qwen-tts-vc-<preferred_name>-voice-<timestamp>-<hex>``, and speaks only for its target model.
It lives in the same registry as CosyVoice clones (gateway/sim/voice_enrollment.py), so the
account's voice limit and synthesis checks cover both. Where the docs name no error code
(unknown voice, bad page) the simulator's choice is written next to it.
"""

from __future__ import annotations

import io
import re
import secrets
import time
import wave
from typing import Any

from gateway.inputs.data_url import DataUrlError, decode_data_url
from gateway.sim.state import SimState
from gateway.sim.voice_enrollment import EnrolledVoice, Refused, check_duration, gmt, page, text_field, voices

MODEL = "qwen-voice-enrollment"
#: clone targets listed in §1.10; synthesis must use the same model later
TARGET_MODELS = frozenset(
    {"qwen3-tts-vc-2026-01-22", "qwen3-tts-vc-realtime-2026-01-15", "qwen3-tts-vc-realtime-2025-11-27"}
)
VOICE_PREFIX = "qwen-tts-vc-"
PREFERRED_NAME = re.compile(r"^[A-Za-z0-9_]{1,16}$")
MIME_TYPES = frozenset({"audio/wav", "audio/x-wav", "audio/mpeg", "audio/mp3", "audio/mp4", "audio/m4a"})
MAX_SAMPLE_CHARS = 10 * 1024 * 1024  # "< 10 MB after base64"
MIN_RATE = 24000


def _wav_format(raw: bytes) -> tuple[int, int] | None:
    """(sample rate, channels) of a WAV file, None for other containers."""
    try:
        with wave.open(io.BytesIO(raw)) as w:
            return w.getframerate(), w.getnchannels()
    except (wave.Error, EOFError):
        return None


async def _check_audio(audio: Any) -> None:
    ref = audio.get("data") if isinstance(audio, dict) else None
    if not isinstance(ref, str) or not ref:
        raise Refused(400, "InvalidParameter", "input.audio.data is required")
    if ref.startswith(("http://", "https://", "oss://")):
        raise Refused(
            415, "BadRequest.InputDownloadFailed", f"Download the media resource timed out: {ref[:64]}"
        )
    try:
        sample = decode_data_url(ref, max_chars=MAX_SAMPLE_CHARS)
    except DataUrlError as exc:
        if exc.reason == "too_large":
            raise Refused(413, "BadRequest.TooLarge", "The audio file is larger than 10 MB.") from None
        raise Refused(400, "InvalidParameter", f"input.audio.data: {exc}") from None
    if sample.mime not in MIME_TYPES:
        raise Refused(
            415, "BadRequest.UnsupportedFileFormat", f"audio type '{sample.mime[:32]}' is not supported"
        )
    fmt = _wav_format(sample.data)
    if fmt is not None and (fmt[0] < MIN_RATE or fmt[1] != 1):
        raise Refused(
            400,
            "InvalidParameter",
            f"the audio must be mono at {MIN_RATE} Hz or more, got {fmt[1]} ch at {fmt[0]} Hz",
        )
    await check_duration(sample.data, sample.subtype)


async def _create(state: SimState, data: dict[str, Any]) -> dict[str, Any]:
    target = text_field(data, "target_model")
    if target not in TARGET_MODELS:
        raise Refused(400, "InvalidParameter", f"target_model '{target[:64]}' does not support voice cloning")
    name = text_field(data, "preferred_name")
    if not PREFERRED_NAME.match(name):
        raise Refused(
            400, "InvalidParameter", "preferred_name: digits, letters and underscore, at most 16 characters"
        )
    await _check_audio(data.get("audio"))
    registry = voices(state)
    if len(registry) >= state.config.voice_limit:  # no documented code: as CosyVoice's (assumed)
        raise Refused(429, "Throttling.AllocationQuota", f"voice limit of {state.config.voice_limit} reached")
    now = time.time()
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(now))
    voice = f"{VOICE_PREFIX}{name}-voice-{stamp}-{secrets.token_hex(4)}"
    registry[voice] = EnrolledVoice(voice, target, name, "", now, now, 0.0, "OK")
    return {"voice": voice, "target_model": target}


async def qwen_act(state: SimState, data: dict[str, Any]) -> dict[str, Any]:
    action = data.get("action")
    if action == "create":
        return await _create(state, data)
    if action == "list":
        index, size = page(data, "page_index", 0), max(1, page(data, "page_size", 10))
        found = sorted(
            (v for v in voices(state).values() if v.voice_id.startswith(VOICE_PREFIX)),
            key=lambda v: -v.created,
        )
        listed = [
            {"voice": v.voice_id, "target_model": v.target_model, "gmt_create": gmt(v.created)}
            for v in found[index * size : (index + 1) * size]
        ]
        return {"voice_list": listed}
    if action == "delete":
        voice = text_field(data, "voice")
        if voices(state).pop(voice, None) is None:  # code not documented: InvalidParameter assumed
            raise Refused(400, "InvalidParameter", f"voice '{voice[:64]}' does not exist")
        return {}
    raise Refused(400, "InvalidParameter", f"input.action '{str(action)[:32]}' is not supported")


def redact(body: dict[str, Any]) -> Any:
    """The request log keeps the sample's length, not the recording."""
    data = body.get("input")
    audio = data.get("audio") if isinstance(data, dict) else None
    if isinstance(audio, dict) and isinstance(audio.get("data"), str):
        return {**body, "input": {**data, "audio": {"data": f"<data uri, {len(audio['data'])} chars>"}}}
    return body
