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

from starlette.requests import Request
from starlette.responses import Response

from gateway.dashscope.bodies import json_response
from gateway.dashscope.errors import native_error
from gateway.sim.admission import Call, admit
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
            "gmt_create": _gmt(self.created),
            "gmt_modified": _gmt(self.modified),
            "status": self.status(),
        }


def _gmt(ts: float) -> str:
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


class _Refused(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _text(data: dict[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value:
        raise _Refused(400, "InvalidParameter", f"input.{name} is required")
    return value


async def _check_sample(url: str) -> None:
    match = _DATA_URI.match(url)
    if match is None:
        if url.startswith(("http://", "https://", "oss://")):
            raise _Refused(
                415, "BadRequest.InputDownloadFailed", f"Download the media resource timed out: {url[:64]}"
            )
        raise _Refused(400, "InvalidURL", "input.url must be a public URL or a data URI")
    try:
        raw = base64.b64decode(match.group(2), validate=True)
    except (binascii.Error, ValueError):
        raise _Refused(400, "InvalidParameter", "input.url: the data URI is not valid base64") from None
    if len(raw) > MAX_SAMPLE_BYTES:
        raise _Refused(413, "BadRequest.TooLarge", "The audio file is larger than 10 MB.")
    try:
        seconds = await asyncio.to_thread(audio_duration, raw, "wav")
    except ValueError:
        raise _Refused(
            415, "BadRequest.UnsupportedFileFormat", "Input file format is not supported."
        ) from None
    if not MIN_SAMPLE_S <= seconds <= MAX_SAMPLE_S:
        raise _Refused(
            400,
            "InvalidParameter",
            f"audio duration {seconds:.1f}s is outside [{MIN_SAMPLE_S:g}, {MAX_SAMPLE_S:g}]s",
        )


async def _create(state: SimState, data: dict[str, Any]) -> dict[str, Any]:
    target = _text(data, "target_model")
    if target not in TARGET_MODELS:
        raise _Refused(
            400, "InvalidParameter", f"target_model '{target[:64]}' does not support voice cloning"
        )
    prefix = _text(data, "prefix")
    if not PREFIX.match(prefix):
        raise _Refused(
            400, "InvalidParameter", "prefix: digits, letters and underscore, at most 10 characters"
        )
    url = _text(data, "url")
    await _check_sample(url)
    registry = voices(state)
    if len(registry) >= state.config.voice_limit:
        # No documented code for a full account: the quota-used-up code (not retryable) is assumed.
        raise _Refused(
            429, "Throttling.AllocationQuota", f"voice limit of {state.config.voice_limit} reached"
        )
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
    voice_id = _text(data, "voice_id")
    voice = voices(state).get(voice_id)
    if voice is None:  # code not documented: InvalidParameter assumed
        raise _Refused(400, "InvalidParameter", f"voice '{voice_id[:64]}' does not exist")
    return voice


def _page(data: dict[str, Any], name: str, default: int) -> int:
    value = data.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _Refused(400, "InvalidParameter", f"input.{name} must be a non-negative integer")
    return value


async def _act(state: SimState, data: dict[str, Any]) -> dict[str, Any]:
    action = data.get("action")
    if action == "create_voice":
        return await _create(state, data)
    if action == "list_voice":
        prefix = data.get("prefix") or ""
        index, size = _page(data, "page_index", 0), max(1, _page(data, "page_size", 10))
        found = sorted(
            (v for v in voices(state).values() if not prefix or v.prefix == prefix), key=lambda v: -v.created
        )
        return {"voice_list": [v.listed() for v in found[index * size : (index + 1) * size]]}
    if action == "query_voice":
        voice = _known(state, data)
        return {
            "gmt_create": _gmt(voice.created),
            "gmt_modified": _gmt(voice.modified),
            "resource_link": voice.resource_link,
            "target_model": voice.target_model,
            "status": voice.status(),
        }
    if action == "update_voice":
        voice = _known(state, data)
        url = _text(data, "url")
        await _check_sample(url)
        voice.resource_link, voice.modified = url[:64], time.time()
        return {}
    if action == "delete_voice":
        voices(state).pop(_known(state, data).voice_id)
        return {}
    raise _Refused(400, "InvalidParameter", f"input.action '{str(action)[:32]}' is not supported")


def _redact(body: dict[str, Any]) -> Any:
    data = body.get("input")
    if isinstance(data, dict) and isinstance(data.get("url"), str) and data["url"].startswith("data:"):
        return {**body, "input": {**data, "url": f"<data uri, {len(data['url'])} chars>"}}
    return body


async def customization(request: Request) -> Response:
    state: SimState = request.app.state.sim
    call = await admit(
        request, state, "tts", lambda m: m == MODEL, native_error, stream=False, redact=_redact
    )
    if not isinstance(call, Call):
        return call
    data = call.body.get("input")
    try:
        if not isinstance(data, dict):
            raise _Refused(400, "InvalidParameter", "input must be an object")
        output = await _act(state, data)
    except _Refused as exc:
        call.record["status"] = exc.status
        return native_error(exc.status, exc.code, exc.message, call.request_id)
    return json_response({"output": output, "usage": {"count": 1}, "request_id": call.request_id})
