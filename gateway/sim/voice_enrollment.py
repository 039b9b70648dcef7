"""``POST /api/v1/services/audio/tts/customization``: CosyVoice voice enrollment (model ``voice-enrollment``).

Wire shapes follow reference/voice-emotion.md §1.1-1.8: one JSON envelope ``{"model", "input":
{"action", ...}, "parameters"}`` with the actions ``create_voice``, ``list_voice``, ``query_voice``,
``update_voice`` and ``delete_voice``. A new voice is ``DEPLOYING`` (under review) for
``SimConfig.voice_review_ms`` and then becomes ``voice_review_outcome`` (``OK`` or ``UNDEPLOYED``),
computed when read. The account holds at most ``voice_limit`` voices (1000 on Bailian).

The sample must be a base64 data URI: the simulator cannot download public URLs, so any other URL
is answered as Bailian answers an unreachable one (415 ``BadRequest.InputDownloadFailed``).
Where the docs name no error code (unknown voice id, account full) the simulator's choice is
written next to it; treat those as assumptions.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

from gateway.sim.audio_codec import audio_duration
from gateway.sim.state import SimState

PATH = "/api/v1/services/audio/tts/customization"
MODEL = "voice-enrollment"
#: clone targets (reference §1.2); synthesis must use the same model later
TARGET_MODELS = frozenset(
    {"cosyvoice-v3.5-plus", "cosyvoice-v3.5-flash", "cosyvoice-v3-plus", "cosyvoice-v3-flash",
     "cosyvoice-v2", "cosyvoice-v1"}
)  # fmt: skip
#: the create_voice table's rule (the most lenient of the documented variants, §1.3)
PREFIX = re.compile(r"^[A-Za-z0-9_]{1,10}$")
MAX_SAMPLE_BYTES = 10 * 1024 * 1024
MIN_SAMPLE_S = 3.0
MAX_SAMPLE_S = 60.0
_DATA_URI = re.compile(r"^data:(audio/[\w.+-]+);base64,(.*)$", re.S)


@dataclass
class EnrolledVoice:
    voice_id: str
    target_model: str
    prefix: str
    resource_link: str
    created: float
    modified: float
    review_ms: float
    outcome: str

    def status(self) -> str:
        if (time.time() - self.modified) * 1000 < self.review_ms:
            return "DEPLOYING"
        return self.outcome

    def listed(self) -> dict[str, Any]:
        return {
            "voice_id": self.voice_id,
            "gmt_create": gmt(self.created),
            "gmt_modified": gmt(self.modified),
            "status": self.status(),
        }


def gmt(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def voices(state: SimState) -> dict[str, EnrolledVoice]:
    """The account's enrolled voices (one registry per simulator app, created on first use)."""
    registry = getattr(state, "enrolled_voices", None)
    if registry is None:
        registry = {}
        state.enrolled_voices = registry  # type: ignore[attr-defined]
    return registry


def synthesis_refusal(state: SimState, voice: str, model: str | None) -> str | None:
    """Why an enrolled ``voice`` cannot speak for ``model`` now (None: it can; also None for
    voices that were never enrolled, which the caller checks against its preset list)."""
    enrolled = voices(state).get(voice)
    if enrolled is None:
        return None
    status = enrolled.status()
    if status != "OK":
        return f"voice '{voice}' is not ready (status {status})"
    if model != enrolled.target_model:
        return f"voice '{voice}' was enrolled for {enrolled.target_model}, not {model}"
    return None


def is_enrolled(state: SimState, voice: str) -> bool:
    return voice in voices(state)


class Refused(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def text_field(data: dict[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value:
        raise Refused(400, "InvalidParameter", f"input.{name} is required")
    return value


async def _check_sample(url: str) -> None:
    match = _DATA_URI.match(url)
    if match is None:
        if url.startswith(("http://", "https://", "oss://")):
            raise Refused(
                415, "BadRequest.InputDownloadFailed", f"Download the media resource timed out: {url[:64]}"
            )
        raise Refused(400, "InvalidURL", "input.url must be a public URL or a data URI")
    try:
        raw = base64.b64decode(match.group(2), validate=True)
    except (binascii.Error, ValueError):
        raise Refused(400, "InvalidParameter", "input.url: the data URI is not valid base64") from None
    if len(raw) > MAX_SAMPLE_BYTES:
        raise Refused(413, "BadRequest.TooLarge", "The audio file is larger than 10 MB.")
    await check_duration(raw, "wav")


async def check_duration(raw: bytes, fmt: str | None) -> None:
    """Both cloning flavours' rule: a recording that decodes, of MIN_SAMPLE_S to MAX_SAMPLE_S."""
    try:
        seconds = await asyncio.to_thread(audio_duration, raw, fmt)
    except ValueError:
        raise Refused(
            415, "BadRequest.UnsupportedFileFormat", "Input file format is not supported."
        ) from None
    if not MIN_SAMPLE_S <= seconds <= MAX_SAMPLE_S:
        raise Refused(
            400,
            "InvalidParameter",
            f"audio duration {seconds:.1f}s is outside [{MIN_SAMPLE_S:g}, {MAX_SAMPLE_S:g}]s",
        )


async def _create(state: SimState, data: dict[str, Any]) -> dict[str, Any]:
    target = text_field(data, "target_model")
    if target not in TARGET_MODELS:
        raise Refused(400, "InvalidParameter", f"target_model '{target[:64]}' does not support voice cloning")
    prefix = text_field(data, "prefix")
    if not PREFIX.match(prefix):
        raise Refused(
            400, "InvalidParameter", "prefix: digits, letters and underscore, at most 10 characters"
        )
    url = text_field(data, "url")
    await _check_sample(url)
    registry = voices(state)
    if len(registry) >= state.config.voice_limit:
        # No documented code for a full account: the quota-used-up code (not retryable) is assumed.
        raise Refused(429, "Throttling.AllocationQuota", f"voice limit of {state.config.voice_limit} reached")
    now = time.time()
    voice_id = f"{target}-{prefix}-{secrets.token_hex(4)}"
    registry[voice_id] = EnrolledVoice(
        voice_id,
        target,
        prefix,
        url[:64],
        now,
        now,
        state.config.voice_review_ms,
        state.config.voice_review_outcome,
    )
    return {"voice_id": voice_id}


def _known(state: SimState, data: dict[str, Any]) -> EnrolledVoice:
    voice_id = text_field(data, "voice_id")
    voice = voices(state).get(voice_id)
    if voice is None:  # code not documented: InvalidParameter assumed
        raise Refused(400, "InvalidParameter", f"voice '{voice_id[:64]}' does not exist")
    return voice


def page(data: dict[str, Any], name: str, default: int) -> int:
    value = data.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise Refused(400, "InvalidParameter", f"input.{name} must be a non-negative integer")
    return value


def redact(body: dict[str, Any]) -> Any:
    """The request log keeps the sample's length, not the recording."""
    data = body.get("input")
    if isinstance(data, dict) and isinstance(data.get("url"), str) and data["url"].startswith("data:"):
        return {**body, "input": {**data, "url": f"<data uri, {len(data['url'])} chars>"}}
    return body


async def cosyvoice_act(state: SimState, data: dict[str, Any]) -> dict[str, Any]:
    action = data.get("action")
    if action == "create_voice":
        return await _create(state, data)
    if action == "list_voice":
        prefix = data.get("prefix") or ""
        index, size = page(data, "page_index", 0), max(1, page(data, "page_size", 10))
        found = sorted(
            (v for v in voices(state).values() if not prefix or v.prefix == prefix), key=lambda v: -v.created
        )
        return {"voice_list": [v.listed() for v in found[index * size : (index + 1) * size]]}
    if action == "query_voice":
        voice = _known(state, data)
        return {
            "gmt_create": gmt(voice.created),
            "gmt_modified": gmt(voice.modified),
            "resource_link": voice.resource_link,
            "target_model": voice.target_model,
            "status": voice.status(),
        }
    if action == "update_voice":
        voice = _known(state, data)
        url = text_field(data, "url")
        await _check_sample(url)
        voice.resource_link, voice.modified = url[:64], time.time()
        return {}
    if action == "delete_voice":
        voices(state).pop(_known(state, data).voice_id)
        return {}
    raise Refused(400, "InvalidParameter", f"input.action '{str(action)[:32]}' is not supported")
