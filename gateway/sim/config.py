"""Simulator settings: accepted keys, per-service latencies, scripted answers.

One mutable object per simulator app; the control API (`PUT /sim/config`) merges into it at run time,
so every handler reads the current values on each request instead of caching them.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from gateway.sim.capabilities import check_override

API_KEYS_ENV = "TALKGATE_SIM_API_KEYS"

# Latency fields, all in milliseconds; 0 means "answer as fast as possible" (no sleep at all).
LATENCY_FIELDS = (
    "ttft_ms",
    "token_delay_ms",
    "tts_first_chunk_ms",
    "tts_chunk_delay_ms",
    "asr_delay_ms",
    "asr_ms_per_audio_s",
)


def normalize_prompt(text: str) -> str:
    """Key used to match scripted answers: case- and whitespace-insensitive."""
    return " ".join(text.split()).casefold()


@dataclass
class SimConfig:
    """What the simulator accepts and how it answers.

    ``api_keys``: None reads ``TALKGATE_SIM_API_KEYS`` (comma-separated); if that is unset too, any
    non-empty key is accepted. ``answers`` maps a user message (matched case/space-insensitively against
    the last user message) to the assistant's reply; unmatched prompts get a deterministic default.
    """

    api_keys: list[str] | None = None
    ttft_ms: float = 0.0
    token_delay_ms: float = 0.0
    tts_first_chunk_ms: float = 0.0
    tts_chunk_delay_ms: float = 0.0
    asr_delay_ms: float = 0.0
    # Recognition work per second of audio (ms), done as the audio arrives: audio streamed at
    # real-time pace is mostly recognised by its end, audio sent all at once waits for all of it.
    asr_ms_per_audio_s: float = 0.0
    answers: dict[str, str] = field(default_factory=dict)
    default_answer_prefix: str = "Simulated answer:"
    asr_transcript: str | None = None
    ws_idle_timeout_s: float = 23.0
    record_limit: int = 2000
    # Base URL used in returned audio URLs; None derives it from the request's Host header.
    public_url: str | None = None
    # Per exact model name, capability flags that override gateway/sim/capabilities.py's table.
    model_capabilities: dict[str, dict[str, bool]] = field(default_factory=dict)
    # Non-streamed tool-call replies report finish_reason "stop", as a 2024 capture did.
    legacy_tool_finish_reason: bool = False
    # Voice enrollment (gateway/sim/voice_enrollment.py): review time of a new voice, its outcome
    # ("OK" or "UNDEPLOYED") and the account's voice limit (1000 on Bailian).
    voice_review_ms: float = 0.0
    voice_review_outcome: str = "OK"
    voice_limit: int = 1000

    def __post_init__(self) -> None:
        if self.api_keys is None:
            raw = os.environ.get(API_KEYS_ENV, "")
            keys = [k.strip() for k in raw.split(",") if k.strip()]
            self.api_keys = keys or None
        self.answers = {normalize_prompt(k): v for k, v in self.answers.items()}

    def key_ok(self, key: str | None) -> bool:
        """Bailian-like key check: a listed key, or any non-empty key when no list is configured."""
        if not key:
            return False
        return True if not self.api_keys else key in self.api_keys

    def scripted_answer(self, user_text: str) -> str | None:
        return self.answers.get(normalize_prompt(user_text))

    def public_view(self) -> dict[str, Any]:
        """JSON for ``GET /sim/config``; the key list is reported by count only."""
        data = asdict(self)
        data["api_keys"] = None if self.api_keys is None else len(self.api_keys)
        return data

    def merge(self, patch: dict[str, Any]) -> None:
        """Apply a ``PUT /sim/config`` body. ``answers`` is merged key by key (a null value deletes one).

        Raises ValueError for unknown fields or bad values so the control API can answer 400.
        """
        known = {f.name for f in fields(self)} - {"api_keys"}
        unknown = set(patch) - known
        if unknown:
            raise ValueError(f"unknown config field(s): {', '.join(sorted(unknown))}")
        for name, value in patch.items():
            if name in LATENCY_FIELDS or name == "ws_idle_timeout_s":
                if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                    raise ValueError(f"{name} must be a non-negative number")
                setattr(self, name, float(value))
            elif name == "answers":
                if not isinstance(value, dict):
                    raise ValueError("answers must be an object")
                for prompt, answer in value.items():
                    if answer is None:
                        self.answers.pop(normalize_prompt(prompt), None)
                    elif isinstance(answer, str):
                        self.answers[normalize_prompt(prompt)] = answer
                    else:
                        raise ValueError("answers values must be strings or null")
            elif name in ("asr_transcript", "public_url"):
                if value is not None and not isinstance(value, str):
                    raise ValueError(f"{name} must be a string or null")
                setattr(self, name, value)
            elif name == "default_answer_prefix":
                if not isinstance(value, str):
                    raise ValueError("default_answer_prefix must be a string")
                self.default_answer_prefix = value
            elif name == "model_capabilities":
                for model, flags in check_override(value).items():
                    if flags is None:
                        self.model_capabilities.pop(model, None)
                    else:
                        self.model_capabilities[model] = {**self.model_capabilities.get(model, {}), **flags}
            elif name == "legacy_tool_finish_reason":
                if not isinstance(value, bool):
                    raise ValueError("legacy_tool_finish_reason must be a boolean")
                self.legacy_tool_finish_reason = value
            elif name == "voice_review_ms":
                if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                    raise ValueError("voice_review_ms must be a non-negative number")
                self.voice_review_ms = float(value)
            elif name == "voice_review_outcome":
                if value not in ("OK", "UNDEPLOYED"):
                    raise ValueError("voice_review_outcome must be 'OK' or 'UNDEPLOYED'")
                self.voice_review_outcome = value
            elif name == "voice_limit":
                if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                    raise ValueError("voice_limit must be a non-negative integer")
                self.voice_limit = value
            elif name == "record_limit":
                if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                    raise ValueError("record_limit must be a positive integer")
                self.record_limit = value
