"""What a model swap asks for (``SwapSpec``), what it moves between (``Version``) and what it
records (``SwapRecord``); split from ``gateway.hotswap``, which runs the swaps.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from gateway.inflight import TrackedProvider


class SwapError(Exception):
    """The swap request cannot be carried out as asked (client error)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class SwapSpec(BaseModel):
    """What to swap to. Extra keys (``path``, ``n_ctx``, ``concurrency``...) are model settings."""

    model_config = ConfigDict(extra="allow")

    provider: str | None = None
    model: str | None = None
    route: list[str] | None = Field(default=None, min_length=1)
    aliases: dict[str, str] | None = None
    probe: bool = True
    drain_timeout_s: float = Field(default=30.0, ge=0, le=600)

    @model_validator(mode="after")
    def _what(self) -> SwapSpec:
        if self.route is None and not (self.provider and self.model):
            raise ValueError('give "route": [...] or both "provider" and "model"')
        if (self.provider is None) != (self.model is None):
            raise ValueError('"provider" and "model" go together')
        for spec in self.route or ():
            provider, sep, model = spec.partition(":")
            if not sep or not provider or not model:
                raise ValueError(f"route target {spec!r} must look like 'provider:model'")
        return self

    def model_settings(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


@dataclass
class Version:
    """A snapshot of everything that serves one capability; a swap moves between snapshots."""

    label: str
    route: Any  # RouteConfig
    providers: dict[str, TrackedProvider]  # registry entries for the capability, by name
    local_models: dict[str, Any]  # settings.local.<section>
    swapped_model: str | None = None  # the model a provider swap changed (warmed on the way back)


@dataclass
class SwapRecord:
    """One swap or rollback as the admin API reports it and the audit log keeps it."""

    id: str
    capability: str
    kind: str  # "swap" | "rollback"
    spec: dict[str, Any]
    who: str
    requested_at: float
    status: str = "pending"  # pending | loading | probing | draining | done | failed
    finished_at: float | None = None
    error: str | None = None
    drained: bool | None = None
    version: str | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "capability": self.capability,
            "kind": self.kind,
            "spec": self.spec,
            "who": self.who,
            "requested_at": self.requested_at,
            "status": self.status,
            "finished_at": self.finished_at,
            "error": self.error,
            "drained": self.drained,
            "version": self.version,
        }


def repointed_route(route: Any, spec: SwapSpec) -> Any:
    """A new RouteConfig with the chain replaced; default aliases follow, the old default stays reachable."""
    old_default = route.chain[0].partition(":")[2]
    new_default = spec.route[0].partition(":")[2]  # type: ignore[index]
    aliases = {k: (new_default if v == old_default else v) for k, v in route.aliases.items()}
    aliases.update(spec.aliases or {})
    chains = dict(route.chains)
    if old_default != new_default and old_default not in chains and old_default not in aliases:
        chains[old_default] = list(route.chain)
    chains.pop(new_default, None)
    return route.model_copy(update={"chain": list(spec.route or ()), "aliases": aliases, "chains": chains})


def first_error(exc: ValidationError) -> str:
    """The first validation problem as one line, for a 400 body a person can act on."""
    err = exc.errors()[0]
    where = ".".join(str(x) for x in err.get("loc", ()))
    return f"{where}: {err.get('msg')}" if where else str(err.get("msg"))
