"""A/B experiments: split one capability's traffic between variants by a stable hash of the user.

A user's bucket is ``SHA-256(experiment id + "/" + user id)`` reduced to 0..9999, so the same
user lands in the same variant on every request, on every replica and after a restart, with
nothing stored per user. Variants own contiguous bucket ranges in their listed order; changing
percentages moves only the users whose bucket changes owner.

Experiments come from ``settings.experiments`` (YAML, read-only at run time) and from the admin
API (persisted as JSON under ``settings.data_dir`` and, with Redis, shared by every replica within
``SYNC_INTERVAL_S``). Per-variant statistics (requests, latency, errors) are kept per process
and exported to Prometheus through the ``variant`` label, which aggregates across replicas.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

log = logging.getLogger("talkgate.experiments")

BUCKETS = 10_000
#: Redis key holding the admin-created experiments shared by every replica.
REDIS_KEY = "tg:experiments"
SYNC_INTERVAL_S = 2.0
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


@dataclass
class _VariantStats:
    requests: int = 0
    errors: int = 0  # 5xx
    client_errors: int = 0  # 4xx
    latency_sum: float = 0.0
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=2048))

    def report(self) -> dict[str, Any]:
        ordered = sorted(self.recent)

        def pct(p: float) -> float | None:
            return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000, 3) if ordered else None

        return {
            "requests": self.requests,
            "errors": self.errors,
            "client_errors": self.client_errors,
            "error_rate": round(self.errors / self.requests, 6) if self.requests else 0.0,
            "latency_ms": {
                "mean": round(self.latency_sum / self.requests * 1000, 3) if self.requests else None,
                "p50": pct(0.5),
                "p95": pct(0.95),
            },
        }


def bucket(experiment_id: str, user: str) -> int:
    """The user's stable bucket in 0..9999 for this experiment."""
    digest = hashlib.sha256(f"{experiment_id}/{user}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


class Experiments:
    """Experiment registry, assignment and per-variant statistics."""

    def __init__(self, settings: Any, store_path: Path | None = None) -> None:
        self.settings = settings
        self._path = store_path if store_path is not None else Path(settings.data_dir) / "experiments.json"
        self._lock = threading.Lock()
        self._specs: dict[str, ExperimentSpec] = {}
        self._sources: dict[str, str] = {}  # id -> "config" | "admin"
        self._created: dict[str, float] = {}
        self._stats: dict[str, _VariantStats] = {}
        self._active: dict[str, ExperimentSpec] = {}  # capability -> enabled experiment
        self._shared: str | None = None  # the Redis copy last adopted or published
        for exp_id, raw in (settings.experiments or {}).items():
            spec = ExperimentSpec.model_validate({"id": exp_id, **raw})
            self._put(spec, "config", time.time())
        for raw in self._load_file():
            spec = ExperimentSpec.model_validate(raw["spec"])
            if spec.id not in self._specs:
                self._put(spec, "admin", raw.get("created_at", time.time()))
        self._rebuild()

    # ------------------------------------------------------------------ hot path

    def assign(self, capability: str, user: str | None) -> Assignment | None:
        """The variant for ``user`` in the capability's running experiment; None if none applies."""
        spec = self._active.get(capability)
        if spec is None or not user:
            return None
        b = bucket(spec.id, user)
        edge = 0.0
        for variant in spec.variants:
            edge += variant.percent * (BUCKETS / 100.0)
            if b < round(edge):
                return Assignment(spec.id, variant, _chain_name(spec, variant))
        return Assignment(spec.id, spec.variants[-1], _chain_name(spec, spec.variants[-1]))

    def apply(self, capability: str, ctx: Any, request: Any) -> Any:
        """What routes call: assign by ctx.user (x-talkgate-user) else the API key, set ctx.variant."""
        if not self._active:
            return request
        assignment = self.assign(capability, ctx.user or ctx.key_id)
        if assignment is None:
            return request
        ctx.variant = assignment.label
        return assignment.apply(request)

    def record(self, label: str, seconds: float, status: int) -> None:
        """Called by the request middleware for requests that carried a variant."""
        stats = self._stats.get(label)
        if stats is None:
            with self._lock:
                stats = self._stats.setdefault(label, _VariantStats())
        stats.requests += 1
        stats.latency_sum += seconds
        stats.recent.append(seconds)
        if status >= 500:
            stats.errors += 1
        elif status >= 400:
            stats.client_errors += 1

    # ------------------------------------------------------------------ admin

    def all(self) -> list[dict[str, Any]]:
        return [self.describe(i) for i in sorted(self._specs)]

    def get(self, exp_id: str) -> ExperimentSpec | None:
        return self._specs.get(exp_id)

    def describe(self, exp_id: str) -> dict[str, Any]:
        spec = self._specs[exp_id]
        variants = []
        for v in spec.variants:
            row = v.model_dump(exclude_none=True)
            row["stats"] = self._stats.get(f"{spec.id}:{v.name}", _VariantStats()).report()
            variants.append(row)
        return {
            "id": spec.id,
            "capability": spec.capability,
            "enabled": spec.enabled,
            "active": self._active.get(spec.capability) is spec,
            "description": spec.description,
            "source": self._sources[spec.id],
            "created_at": self._created[spec.id],
            "variants": variants,
        }

    def create(self, spec: ExperimentSpec) -> None:
        with self._lock:
            if spec.id in self._specs:
                raise ExperimentConflict(f"experiment '{spec.id}' already exists")
            self._check_one_active(spec)
            self._put(spec, "admin", time.time())
            self._rebuild()
            self._save()

    def update(self, exp_id: str, changes: dict[str, Any]) -> ExperimentSpec:
        """Live change of percentages (by variant name), enabled flag or description."""
        with self._lock:
            spec = self._require_admin(exp_id)
            data = spec.model_dump()
            if "percentages" in changes:
                pct: dict[str, float] = changes["percentages"]
                known = {v["name"] for v in data["variants"]}
                unknown = set(pct) - known
                if unknown:
                    raise ExperimentInvalid(f"unknown variants: {', '.join(sorted(unknown))}")
                for v in data["variants"]:
                    v["percent"] = pct.get(v["name"], v["percent"])
            for key in ("enabled", "description"):
                if key in changes and changes[key] is not None:
                    data[key] = changes[key]
            try:
                new = ExperimentSpec.model_validate(data)
            except ValidationError as exc:
                raise ExperimentInvalid(exc.errors()[0].get("msg", "invalid change")) from None
            self._check_one_active(new, ignore=exp_id)
            self._specs[exp_id] = new
            self._rebuild()
            self._save()
            return new

    def delete(self, exp_id: str) -> None:
        with self._lock:
            self._require_admin(exp_id)
            spec = self._specs.pop(exp_id)
            self._sources.pop(exp_id)
            self._created.pop(exp_id)
            self._drop_chains(spec)
            for v in spec.variants:
                self._stats.pop(f"{exp_id}:{v.name}", None)
            self._rebuild()
            self._save()

    def register_routes(self) -> None:
        """Re-register variant chains after the routes were replaced (a model hot swap)."""
        with self._lock:
            for spec in self._specs.values():
                self._register_chains(spec)

    # ------------------------------------------------------------------ internals

    def _require_admin(self, exp_id: str) -> ExperimentSpec:
        spec = self._specs.get(exp_id)
        if spec is None:
            raise KeyError(exp_id)
        if self._sources[exp_id] != "admin":
            raise ExperimentConflict(f"experiment '{exp_id}' comes from the config file; change it there")
        return spec

    def _check_one_active(self, spec: ExperimentSpec, ignore: str | None = None) -> None:
        if not spec.enabled:
            return
        for other in self._specs.values():
            if other.id not in (spec.id, ignore) and other.enabled and other.capability == spec.capability:
                raise ExperimentConflict(
                    f"experiment '{other.id}' already runs on {spec.capability}; disable it first"
                )

    def _put(self, spec: ExperimentSpec, source: str, created: float) -> None:
        self._specs[spec.id] = spec
        self._sources[spec.id] = source
        self._created[spec.id] = created

    def _rebuild(self) -> None:
        """Recompute the active map and register variant chains with the router's routes."""
        active: dict[str, ExperimentSpec] = {}
        for spec in sorted(self._specs.values(), key=lambda s: self._created[s.id]):
            if spec.enabled:
                active.setdefault(spec.capability, spec)
            self._register_chains(spec)
        self._active = active

    def _register_chains(self, spec: ExperimentSpec) -> None:
        route = self.settings.routes.get(spec.capability)
        if route is None:
            return
        for v in spec.variants:
            if v.route:
                route.chains[_chain_name(spec, v)] = list(v.route)  # type: ignore[index]

    def _drop_chains(self, spec: ExperimentSpec) -> None:
        route = self.settings.routes.get(spec.capability)
        if route is None:
            return
        for v in spec.variants:
            route.chains.pop(_chain_name(spec, v) or "", None)

    def _load_file(self) -> list[dict[str, Any]]:
        try:
            data = json.loads(self._path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError):
            log.exception("cannot read %s; admin-created experiments are not restored", self._path)
            return []
        return list(data.get("experiments", []))

    def _rows(self) -> list[dict[str, Any]]:
        return [
            {"spec": s.model_dump(), "created_at": self._created[s.id]}
            for s in sorted(self._specs.values(), key=lambda s: s.id)
            if self._sources[s.id] == "admin"
        ]

    def _save(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"experiments": self._rows()}, indent=2), encoding="utf-8")
        os.replace(tmp, self._path)  # atomic: a crash never leaves half a file

    # ------------------------------------------------------------------ sharing between replicas

    async def publish(self, redis: Any) -> None:
        """Write the admin-created experiments to Redis, where every replica picks them up."""
        doc = json.dumps({"experiments": self._rows()}, sort_keys=True)
        await redis.set(REDIS_KEY, doc)
        self._shared = doc

    async def refresh(self, redis: Any) -> bool:
        """Adopt the shared set when another replica changed it; True if anything changed here."""
        raw = await redis.get(REDIS_KEY)
        if raw is None:
            if self._rows():  # the first replica with experiments seeds the shared copy
                await self.publish(redis)
            return False
        doc = raw.decode() if isinstance(raw, bytes) else str(raw)
        if doc == self._shared:
            return False
        rows = json.loads(doc).get("experiments", [])
        with self._lock:
            self._adopt(rows)
            self._save()
        self._shared = doc
        return True

    def _adopt(self, rows: list[dict[str, Any]]) -> None:
        incoming = {row["spec"]["id"]: row for row in rows}
        for exp_id in [i for i, src in self._sources.items() if src == "admin" and i not in incoming]:
            spec = self._specs.pop(exp_id)
            self._sources.pop(exp_id)
            self._created.pop(exp_id)
            self._drop_chains(spec)
        for exp_id, row in incoming.items():
            if self._sources.get(exp_id) == "config":
                continue  # the config file wins over a shared copy with the same id
            spec = ExperimentSpec.model_validate(row["spec"])
            if exp_id in self._specs:
                self._drop_chains(self._specs[exp_id])
            self._put(spec, "admin", row.get("created_at", time.time()))
        self._rebuild()


async def run_sync(experiments: Experiments, redis: Any, interval_s: float = SYNC_INTERVAL_S) -> None:
    """Background task: adopt other replicas' experiment changes every ``interval_s`` seconds."""
    failing = False
    while True:
        try:
            if await experiments.refresh(redis):
                log.info("experiments updated from the shared copy")
            failing = False
        except asyncio.CancelledError:
            raise
        except Exception:
            if not failing:  # log once per outage, not every interval
                log.exception("cannot read shared experiments from Redis; keeping the local set")
            failing = True
        await asyncio.sleep(interval_s)


def _chain_name(spec: ExperimentSpec, variant: VariantSpec) -> str | None:
    return f"experiment/{spec.id}/{variant.name}" if variant.route else None


class ExperimentConflict(Exception):
    """The change clashes with existing state (duplicate id, second active experiment, config-owned)."""


class ExperimentInvalid(Exception):
    """The change is malformed."""
