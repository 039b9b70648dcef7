"""A/B experiments: the registry that splits one capability's traffic between variants.

Experiments come from ``settings.experiments`` (YAML, read-only at run time) and from the admin
API (persisted as JSON under ``settings.data_dir`` and, with Redis, shared by every replica within
``SYNC_INTERVAL_S``). Assignment by a stable hash of the user is in ``policies.experiment_spec``,
storage in ``policies.experiment_store``, per-variant statistics in ``policies.experiment_stats``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from policies.experiment_spec import (
    BUCKETS,
    CAPABILITIES,
    Assignment,
    ExperimentConflict,
    ExperimentInvalid,
    ExperimentSpec,
    VariantSpec,
    bucket,
    chain_name,
    pick_variant,
)
from policies.experiment_stats import VariantStats
from policies.experiment_store import REDIS_KEY, ExperimentFile, SharedCopy

# Re-exported: routes, services and tests import these from here.
__all__ = [
    "BUCKETS",
    "CAPABILITIES",
    "REDIS_KEY",
    "SYNC_INTERVAL_S",
    "Assignment",
    "ExperimentConflict",
    "ExperimentInvalid",
    "ExperimentSpec",
    "Experiments",
    "VariantSpec",
    "bucket",
    "run_sync",
]

log = logging.getLogger("talkgate.experiments")

SYNC_INTERVAL_S = 2.0


class Experiments:
    """Experiment registry, assignment and per-variant statistics."""

    def __init__(self, settings: Any, store_path: Path | None = None) -> None:
        self.settings = settings
        path = store_path if store_path is not None else Path(settings.data_dir) / "experiments.json"
        self._file = ExperimentFile(path)
        self._lock = threading.Lock()
        self._specs: dict[str, ExperimentSpec] = {}
        self._sources: dict[str, str] = {}  # id -> "config" | "admin"
        self._created: dict[str, float] = {}
        self._stats: dict[str, VariantStats] = {}
        self._active: dict[str, ExperimentSpec] = {}  # capability -> enabled experiment
        self._shared = SharedCopy()
        for exp_id, raw in (settings.experiments or {}).items():
            spec = ExperimentSpec.model_validate({"id": exp_id, **raw})
            self._put(spec, "config", time.time())
        for raw in self._file.load():
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
        return pick_variant(spec, user)

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
                stats = self._stats.setdefault(label, VariantStats())
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
            row["stats"] = self._stats.get(f"{spec.id}:{v.name}", VariantStats()).report()
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
                route.chains[chain_name(spec, v)] = list(v.route)  # type: ignore[index]

    def _drop_chains(self, spec: ExperimentSpec) -> None:
        route = self.settings.routes.get(spec.capability)
        if route is None:
            return
        for v in spec.variants:
            route.chains.pop(chain_name(spec, v) or "", None)

    def _rows(self) -> list[dict[str, Any]]:
        return [
            {"spec": s.model_dump(), "created_at": self._created[s.id]}
            for s in sorted(self._specs.values(), key=lambda s: s.id)
            if self._sources[s.id] == "admin"
        ]

    def _save(self) -> None:
        self._file.save(self._rows())

    # ------------------------------------------------------------------ sharing between replicas

    async def publish(self, redis: Any) -> None:
        """Write the admin-created experiments to Redis, where every replica picks them up."""
        await self._shared.publish(redis, self._rows())

    async def refresh(self, redis: Any) -> bool:
        """Adopt the shared set when another replica changed it; True if anything changed here."""
        doc = await self._shared.read(redis)
        if doc is None:
            if self._rows():  # the first replica with experiments seeds the shared copy
                await self.publish(redis)
            return False
        if doc == self._shared.last:
            return False
        with self._lock:
            self._adopt(SharedCopy.rows(doc))
            self._save()
        self._shared.last = doc
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
