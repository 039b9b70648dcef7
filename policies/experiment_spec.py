"""What an A/B experiment is and how a user is assigned to one of its variants.

A user's bucket is ``SHA-256(experiment id + "/" + user id)`` reduced to 0..9999, so the same
user lands in the same variant on every request, on every replica and after a restart, with
nothing stored per user. Variants own contiguous bucket ranges in their listed order; changing
percentages moves only the users whose bucket changes owner. Split from ``policies.experiments``,
which keeps the registry these specs live in.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Any

from pydantic import BaseModel, Field, field_validator, model_validator

BUCKETS = 10_000
CAPABILITIES = ("chat", "asr", "tts")


class VariantSpec(BaseModel):
    """One arm. Unset fields leave the request as the client sent it."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    percent: float = Field(ge=0, le=100)
    model: str | None = None  # a model name or alias the router knows, or "provider:model"
    route: list[str] | None = None  # a whole fallback chain of "provider:model" targets
    voice: str | None = None  # tts
    system_prompt: str | None = None  # chat: replaces (or adds) the system message

    @field_validator("route")
    @classmethod
    def _targets(cls, v: list[str] | None) -> list[str] | None:
        if v is not None:
            if not v:
                raise ValueError("route must name at least one target")
            for spec in v:
                provider, sep, model = spec.partition(":")
                if not sep or not provider or not model:
                    raise ValueError(f"route target {spec!r} must look like 'provider:model'")
        return v


class ExperimentSpec(BaseModel):
    """One experiment: the capability it splits and its variants, whose percentages add to 100."""

    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    capability: str
    variants: list[VariantSpec] = Field(min_length=2)
    enabled: bool = True
    description: str = ""

    @field_validator("capability")
    @classmethod
    def _capability(cls, v: str) -> str:
        if v not in CAPABILITIES:
            raise ValueError(f"capability must be one of {', '.join(CAPABILITIES)}")
        return v

    @model_validator(mode="after")
    def _check(self) -> ExperimentSpec:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError("variant names must be unique")
        total = sum(v.percent for v in self.variants)
        if abs(total - 100.0) > 1e-6:
            raise ValueError(f"variant percentages must add up to 100 (they add up to {total:g})")
        return self


@dataclass(frozen=True, slots=True)
class Assignment:
    """The variant a user got; ``label`` ("experiment:variant") goes into ctx.variant and metrics."""

    experiment: str
    variant: VariantSpec
    chain_name: str | None = None  # route key registered for a variant with its own chain

    @property
    def label(self) -> str:
        return f"{self.experiment}:{self.variant.name}"

    def apply(self, request: Any) -> Any:
        """A copy of a ChatRequest / SynthesizeRequest / TranscribeRequest with the variant applied."""
        v = self.variant
        changes: dict[str, Any] = {}
        if self.chain_name:
            changes["model"] = self.chain_name
        elif v.model:
            changes["model"] = v.model
        if v.voice and hasattr(request, "voice"):
            changes["voice"] = v.voice
        if v.system_prompt is not None and hasattr(request, "messages"):
            rest = [m for m in request.messages if m.get("role") != "system"]
            changes["messages"] = [{"role": "system", "content": v.system_prompt}, *rest]
        return replace(request, **changes) if changes else request


def bucket(experiment_id: str, user: str) -> int:
    """The user's stable bucket in 0..9999 for this experiment."""
    digest = hashlib.sha256(f"{experiment_id}/{user}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def pick_variant(spec: ExperimentSpec, user: str) -> Assignment:
    """The variant owning ``user``'s bucket (the last one absorbs rounding at the top end)."""
    b = bucket(spec.id, user)
    edge = 0.0
    for variant in spec.variants:
        edge += variant.percent * (BUCKETS / 100.0)
        if b < round(edge):
            return Assignment(spec.id, variant, chain_name(spec, variant))
    return Assignment(spec.id, spec.variants[-1], chain_name(spec, spec.variants[-1]))


def chain_name(spec: ExperimentSpec, variant: VariantSpec) -> str | None:
    """The route key of a variant that brings its own fallback chain (None: it uses the default)."""
    return f"experiment/{spec.id}/{variant.name}" if variant.route else None


class ExperimentConflict(Exception):
    """The change clashes with existing state (duplicate id, second active experiment, config-owned)."""


class ExperimentInvalid(Exception):
    """The change is malformed."""
