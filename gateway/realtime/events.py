"""Wire shapes of the OpenAI Realtime GA protocol, as the installed ``openai`` SDK speaks them.

Kept apart from the session so that the session core deals in plain values (text, PCM, ids)
and a second transport (a WebRTC data channel) can reuse the same parsing and building.
Only GA names are ever emitted (``response.output_audio.delta``, ``conversation.item.added``...):
the SDK parses an unknown ``type`` silently as another event, so a beta name would be lost on
the client without any error (reference/realtime.md §1.1).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

from gateway.conversation.emotion import MODES

#: The only PCM layout of the GA protocol: 16-bit mono little-endian at 24 kHz.
PCM_RATE = 24000
PCM_FORMAT = {"type": "audio/pcm", "rate": PCM_RATE}
#: Audio format types on the wire → their sample rate (gateway/realtime/audio.py converts).
FORMATS = {"audio/pcm": PCM_RATE, "audio/pcmu": 8000, "audio/pcma": 8000}


def format_object(kind: str) -> dict[str, Any]:
    """The GA ``format`` object of a format type."""
    return dict(PCM_FORMAT) if kind == "audio/pcm" else {"type": kind}


#: Bounds of server_vad ``idle_timeout_ms`` (talkgate's; the session itself closes after
#: ``realtime.idle_timeout_s`` without any client event).
MIN_IDLE_MS, MAX_IDLE_MS = 1000, 600_000
#: semantic_vad's ``eagerness`` → the silence (ms) that ends a turn on the server VAD it is mapped
#: onto: talkgate has no end-of-turn model, so "low" waits longer for the user to go on, "high"
#: answers sooner (OpenAI's semantic_vad waits at most 8 s / 4 s / 2 s when unsure).
SEMANTIC_SILENCE_MS = {"low": 1200, "medium": 700, "auto": 700, "high": 350}
DEFAULT_VOICE = "alloy"
MAX_OUTPUT_TOKENS = 4096
#: OpenAI's server_vad defaults (reference/realtime.md §1.4).
VAD_DEFAULTS: dict[str, Any] = {
    "type": "server_vad",
    "threshold": 0.5,
    "prefix_padding_ms": 300,
    "silence_duration_ms": 500,
    "create_response": True,
    "interrupt_response": True,
    "idle_timeout_ms": None,
}


class BadEvent(Exception):
    """A client event the session refuses; becomes an ``error`` event, the session stays open."""

    def __init__(
        self,
        message: str,
        code: str,
        param: str | None = None,
        event_id: str | None = None,
        type_: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param
        self.event_id = event_id
        self.type = type_


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(10)}"


def server_event(type_: str, **fields: Any) -> dict[str, Any]:
    return {"type": type_, "event_id": new_id("event"), **fields}


def error_event(
    message: str,
    code: str,
    param: str | None = None,
    client_event_id: str | None = None,
    type_: str = "invalid_request_error",
) -> dict[str, Any]:
    error = {"type": type_, "code": code, "message": message, "param": param, "event_id": client_event_id}
    return server_event("error", error=error)


def parse_client_event(raw: str | bytes) -> dict[str, Any]:
    """The event object of one text frame; malformed input raises BadEvent."""
    try:
        event = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadEvent(f"The event is not valid JSON: {exc}", "invalid_json") from None
    if not isinstance(event, dict):
        raise BadEvent("An event must be a JSON object.", "invalid_event")
    event_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
    if not isinstance(event.get("type"), str) or not event["type"]:
        raise BadEvent("The event has no 'type'.", "missing_type", "type", event_id)
    return event


def decode_pcm(
    value: Any, param: str = "audio", event_id: str | None = None, kind: str = "audio/pcm"
) -> bytes:
    """Base64 → audio bytes of ``kind``; PCM that is not whole 16-bit samples is refused."""
    if not isinstance(value, str):
        raise BadEvent(f"'{param}' must be a base64 string.", "invalid_value", param, event_id)
    try:
        pcm = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BadEvent(f"'{param}' is not valid base64.", "invalid_base64", param, event_id) from None
    if kind == "audio/pcm" and len(pcm) % 2:
        raise BadEvent(
            f"'{param}' has an odd number of bytes: audio must be 16-bit PCM.",
            "invalid_audio",
            param,
            event_id,
        )
    return pcm


def encode_pcm(pcm: bytes) -> str:
    return base64.b64encode(pcm).decode("ascii")


#: ``audio.input.transcription`` of a new session: on, with the ASR chain's default model. The
#: cascade always transcribes (the LLM reads the words); ``null`` only stops the transcript
#: events and transcripts on items, as OpenAI's sessions without transcription do.
DEFAULT_TRANSCRIPTION: dict[str, Any] = {"model": "default", "language": None, "prompt": None}
_LANGUAGE = re.compile(r"^[a-z]{2,3}(-[A-Za-z]{2,4})?$")


@dataclass(slots=True)
class SessionConfig:
    """What ``session.update`` may change; ``describe`` is the GA ``session`` object sent back."""

    id: str = field(default_factory=lambda: new_id("sess"))
    model: str = ""
    instructions: str = ""
    voice: str = DEFAULT_VOICE
    output_modalities: list[str] = field(default_factory=lambda: ["audio"])
    max_output_tokens: int | str = "inf"
    temperature: float | None = None
    turn_detection: dict[str, Any] | None = None
    input_format: str = "audio/pcm"
    output_format: str = "audio/pcm"
    #: chat-shaped tools and choice (what the router gets) and their Realtime wire forms
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_choice: str | dict[str, Any] = "auto"
    tools_wire: list[dict[str, Any]] = field(default_factory=list)
    tool_choice_wire: str | dict[str, Any] = "auto"
    #: talkgate's own: ``{"vector_store_ids": [...], "max_num_results": 5}`` grounds every answer
    knowledge: dict[str, Any] | None = None
    #: talkgate's own: the answers' emotion, as /v1/talk's ``emotion`` ("auto": the LLM's tag, else
    #: the lexicon; "off"; or one emotion), in the voice and, on a live call, the face
    emotion: str = "off"
    #: ``{"model", "language", "prompt"}`` of the input transcription; None: no transcript events
    transcription: dict[str, Any] | None = field(default_factory=lambda: dict(DEFAULT_TRANSCRIPTION))

    @property
    def audio_out(self) -> bool:
        return "audio" in self.output_modalities

    def describe(self) -> dict[str, Any]:
        return {
            "type": "realtime",
            "object": "realtime.session",
            "id": self.id,
            "model": self.model,
            "instructions": self.instructions,
            "output_modalities": list(self.output_modalities),
            "audio": {
                "input": {
                    "format": format_object(self.input_format),
                    "turn_detection": _describe_turn_detection(self.turn_detection),
                    "transcription": dict(self.transcription) if self.transcription is not None else None,
                },
                "output": {"format": format_object(self.output_format), "voice": self.voice, "speed": 1.0},
            },
            "max_output_tokens": self.max_output_tokens,
            "temperature": self.temperature,
            "tools": [dict(t) for t in self.tools_wire],
            "tool_choice": self.tool_choice_wire,
            "knowledge": self.knowledge,
            "emotion": self.emotion,
        }

    def update(self, session: Any, event_id: str | None = None) -> None:
        """Applies a GA ``session`` object; all-or-nothing, so a refused update changes nothing."""
        if not isinstance(session, dict):
            raise BadEvent("'session' must be an object.", "invalid_value", "session", event_id)
        staged = _Staged(self, event_id)
        if session.get("type", "realtime") != "realtime":
            staged.fail("Only realtime sessions are available (not transcription sessions).", "session.type")
        if "instructions" in session:
            staged.instructions = staged.string(session["instructions"], "session.instructions")
        if "output_modalities" in session:
            staged.output_modalities = staged.modalities(
                session["output_modalities"], "session.output_modalities"
            )
        if "max_output_tokens" in session:
            staged.max_output_tokens = staged.max_tokens(
                session["max_output_tokens"], "session.max_output_tokens"
            )
        if "temperature" in session:
            staged.temperature = staged.temperature_of(session["temperature"], "session.temperature")
        if "emotion" in session:  # talkgate's own
            staged.emotion = staged.emotion_of(session["emotion"], "session.emotion")
        # "tools" and "tool_choice" are checked by the session (gateway/realtime/tools.py)
        audio = session.get("audio") or {}
        if not isinstance(audio, dict):
            staged.fail("'session.audio' must be an object.", "session.audio")
        inp, out = audio.get("input") or {}, audio.get("output") or {}
        if "turn_detection" in inp:
            staged.turn_detection = staged.turn_detection_of(inp["turn_detection"])
        if inp.get("format") is not None:
            staged.input_format = staged.audio_format(inp["format"], "session.audio.input.format")
        if "transcription" in inp:
            staged.transcription = staged.transcription_of(
                inp["transcription"], "session.audio.input.transcription"
            )
        if out.get("format") is not None:
            staged.output_format = staged.audio_format(out["format"], "session.audio.output.format")
        if "voice" in out:
            voice = out["voice"]
            voice = voice.get("id") if isinstance(voice, dict) else voice
            staged.voice = staged.string(voice, "session.audio.output.voice", empty=False)
        staged.commit()


class _Staged:
    """The new values of one update, checked before any is applied."""

    def __init__(self, config: SessionConfig, event_id: str | None) -> None:
        self.config = config
        self.event_id = event_id
        self.instructions = config.instructions
        self.voice = config.voice
        self.output_modalities = list(config.output_modalities)
        self.max_output_tokens = config.max_output_tokens
        self.temperature = config.temperature
        self.turn_detection = config.turn_detection
        self.input_format, self.output_format = config.input_format, config.output_format
        self.transcription = config.transcription
        self.emotion = config.emotion

    def fail(self, message: str, param: str, code: str = "invalid_value") -> None:
        raise BadEvent(message, code, param, self.event_id)

    def string(self, value: Any, param: str, empty: bool = True) -> str:
        if not isinstance(value, str) or (not empty and not value.strip()) or len(value) > 16384:
            self.fail(f"'{param}' must be a{' non-empty' if not empty else ''} string.", param)
        return value

    def modalities(self, value: Any, param: str) -> list[str]:
        return parse_modalities(value, param, self.event_id)

    def max_tokens(self, value: Any, param: str) -> int | str:
        return parse_max_tokens(value, param, self.event_id)

    def temperature_of(self, value: Any, param: str) -> float | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 2:
            self.fail(f"'{param}' must be a number between 0 and 2.", param)
        return float(value)

    def emotion_of(self, value: Any, param: str) -> str:
        if value not in MODES:
            self.fail(f"'{param}' must be one of {', '.join(MODES)}.", param)
        return str(value)

    def transcription_of(self, value: Any, param: str) -> dict[str, Any] | None:
        """``null`` (no transcript events) or ``{"model", "language", "prompt"}``; the model is
        resolved against the ASR chain by the session."""
        if value is None:
            return None
        if not isinstance(value, dict):
            self.fail(f"'{param}' must be an object or null.", param)
        model = value.get("model") or "default"
        if not isinstance(model, str) or len(model) > 128:
            self.fail(f"'{param}.model' must be a model name.", f"{param}.model")
        language = value.get("language")
        if language is not None and (not isinstance(language, str) or not _LANGUAGE.match(language)):
            self.fail(
                f"'{param}.language' must be an ISO-639 code such as 'en' or 'zh'.", f"{param}.language"
            )
        prompt = value.get("prompt")
        if prompt is not None:
            prompt = self.string(prompt, f"{param}.prompt") or None
        return {"model": model, "language": language, "prompt": prompt}

    def audio_format(self, value: Any, param: str) -> str:
        """A GA format object ({"type": "audio/pcm", "rate": 24000}, {"type": "audio/pcmu"},
        {"type": "audio/pcma"}); the beta's strings ("pcm16", "g711_ulaw", "g711_alaw") too."""
        legacy = {"pcm16": "audio/pcm", "g711_ulaw": "audio/pcmu", "g711_alaw": "audio/pcma"}
        kind = legacy.get(value) if isinstance(value, str) else None
        if isinstance(value, dict):
            kind = value.get("type")
            rate = value.get("rate", FORMATS.get(kind))
            if kind in FORMATS and rate != FORMATS[kind]:
                self.fail(
                    f"'{kind}' is available at {FORMATS[kind]} Hz only.",
                    param,
                    code="unsupported_audio_format",
                )
        if kind not in FORMATS:
            self.fail(
                "Available formats: {'type': 'audio/pcm', 'rate': 24000}, {'type': 'audio/pcmu'}, "
                "{'type': 'audio/pcma'}.",
                param,
                code="unsupported_audio_format",
            )
        return str(kind)

    def turn_detection_of(self, value: Any) -> dict[str, Any] | None:
        """``null`` (manual turns) or server_vad with OpenAI's defaults filled in."""
        param = "session.audio.input.turn_detection"
        if value is None:
            return None
        if not isinstance(value, dict):
            self.fail(f"'{param}' must be an object or null.", param)
        if value.get("type") == "semantic_vad":
            return self.semantic_vad(value, param)
        if value.get("type") != "server_vad":
            self.fail(
                "Available turn detection: 'server_vad' or 'semantic_vad', or 'turn_detection' null "
                "to commit turns yourself.",
                f"{param}.type",
                code="unsupported_turn_detection",
            )
        merged = {**VAD_DEFAULTS, **{k: v for k, v in value.items() if v is not None}}
        threshold = merged["threshold"]
        if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0 <= threshold <= 1:
            self.fail(f"'{param}.threshold' must be a number between 0 and 1.", f"{param}.threshold")
        for name, top in (("prefix_padding_ms", 5000), ("silence_duration_ms", 10000)):
            ms = merged[name]
            if isinstance(ms, bool) or not isinstance(ms, int) or not 0 <= ms <= top:
                self.fail(f"'{param}.{name}' must be an integer 0 to {top}.", f"{param}.{name}")
        for name in ("create_response", "interrupt_response"):
            if not isinstance(merged[name], bool):
                self.fail(f"'{param}.{name}' must be a boolean.", f"{param}.{name}")
        idle = merged["idle_timeout_ms"]
        if idle is not None and (
            isinstance(idle, bool) or not isinstance(idle, int) or not MIN_IDLE_MS <= idle <= MAX_IDLE_MS
        ):
            self.fail(
                f"'{param}.idle_timeout_ms' must be null or an integer {MIN_IDLE_MS} to {MAX_IDLE_MS}.",
                f"{param}.idle_timeout_ms",
            )
        return {key: merged[key] for key in VAD_DEFAULTS} | {"threshold": float(threshold)}

    def semantic_vad(self, value: dict[str, Any], param: str) -> dict[str, Any]:
        """semantic_vad mapped onto the server VAD: ``eagerness`` picks the silence that ends a
        turn (``SEMANTIC_SILENCE_MS``); threshold and prefix padding keep server_vad's defaults.
        The session describes it back as semantic_vad; ``idle_timeout_ms`` is server_vad's only."""
        eagerness = value.get("eagerness") or "auto"
        if eagerness not in SEMANTIC_SILENCE_MS:
            self.fail(f"'{param}.eagerness' must be low, medium, high or auto.", f"{param}.eagerness")
        if value.get("idle_timeout_ms") is not None:
            self.fail("'idle_timeout_ms' is available with server_vad only.", f"{param}.idle_timeout_ms")
        flags = {name: value.get(name, True) for name in ("create_response", "interrupt_response")}
        for name, flag in flags.items():
            if not isinstance(flag, bool):
                self.fail(f"'{param}.{name}' must be a boolean.", f"{param}.{name}")
        silence = SEMANTIC_SILENCE_MS[eagerness]
        return {
            **VAD_DEFAULTS,
            **flags,
            "type": "semantic_vad",
            "eagerness": eagerness,
            "silence_duration_ms": silence,
        }

    def commit(self) -> None:
        c = self.config
        c.instructions, c.voice, c.output_modalities = self.instructions, self.voice, self.output_modalities
        c.max_output_tokens, c.temperature = self.max_output_tokens, self.temperature
        c.turn_detection = self.turn_detection
        c.input_format, c.output_format = self.input_format, self.output_format
        c.transcription = self.transcription
        c.emotion = self.emotion


def _describe_turn_detection(value: dict[str, Any] | None) -> dict[str, Any] | None:
    """The session's turn detection as the client set it (semantic_vad without the server VAD
    values it is mapped onto)."""
    if value is None:
        return None
    if value["type"] == "semantic_vad":
        return {k: value[k] for k in ("type", "eagerness", "create_response", "interrupt_response")}
    return dict(value)


def parse_modalities(value: Any, param: str, event_id: str | None = None) -> list[str]:
    if not isinstance(value, list) or not value or any(m not in ("text", "audio") for m in value):
        raise BadEvent(f"'{param}' must be ['text'] or ['audio'].", "invalid_value", param, event_id)
    return ["audio"] if "audio" in value else ["text"]


def parse_max_tokens(value: Any, param: str, event_id: str | None = None) -> int | str:
    if value == "inf":
        return "inf"
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_OUTPUT_TOKENS:
        raise BadEvent(
            f"'{param}' must be 1 to {MAX_OUTPUT_TOKENS} or 'inf'.", "invalid_value", param, event_id
        )
    return value


# --------------------------------------------------------------------------- items and responses


def message_item(
    item_id: str, role: str, text: str, *, status: str = "completed", kind: str = "text"
) -> dict[str, Any]:
    """A conversation item. ``kind``: text | audio (assistant audio: transcript) | input_audio."""
    if role == "assistant":
        part = (
            {"type": "output_audio", "transcript": text}
            if kind == "audio"
            else {"type": "output_text", "text": text}
        )
    elif kind == "input_audio":
        part = {"type": "input_audio", "transcript": text or None}
    else:
        part = {"type": "input_text", "text": text}
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "message",
        "role": role,
        "status": status,
        "content": [part],
    }


def usage_object(tokens_in: int, tokens_out: int) -> dict[str, Any]:
    return {
        "total_tokens": tokens_in + tokens_out,
        "input_tokens": tokens_in,
        "output_tokens": tokens_out,
        "input_token_details": {
            "text_tokens": tokens_in,
            "audio_tokens": 0,
            "image_tokens": 0,
            "cached_tokens": 0,
        },
        "output_token_details": {"text_tokens": tokens_out, "audio_tokens": 0},
    }
