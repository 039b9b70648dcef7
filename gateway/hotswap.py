"""Model hot swap with rollback, without dropping a request.

Two kinds of change, both made by ``POST /admin/models/{capability}/swap``:

- a route re-point (``{"route": ["bailian:qwen-turbo", ...]}``): the capability's default chain
  changes; aliases that named the old default model follow it, and the old default model stays
  reachable by its own name;
- a provider version (``{"provider": "local", "model": "smollm2", "path": "/m.gguf", ...}``): a
  new instance of the provider is built with that model's settings changed.

A swap runs in the background: build → load → probe (one tiny real request) → switch atomically
(one dict assignment the router reads per request) → drain the old instance (wait until its
in-flight calls reach zero) → unload it. A failure before the switch leaves everything as it was.
``rollback`` goes back one version the same way; the previous instance is kept (unloaded) so
going back needs no rebuild. Every swap is logged and appended to ``data_dir/model_swaps.jsonl``
with who asked (admin key id), when and what.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from gateway.inflight import TrackedProvider, tracked
from gateway.swap_spec import (
    SwapError,
    SwapRecord,
    SwapSpec,
    Version,
    first_error,
    repointed_route,
)
from providers.base import AudioData, ChatRequest, SynthesizeRequest, TranscribeRequest

# Re-exported: callers import these from here.
__all__ = [
    "CAPABILITY_SECTIONS",
    "SwapError",
    "SwapManager",
    "SwapRecord",
    "SwapSpec",
    "TrackedProvider",
    "Version",
    "tracked",
]

log = logging.getLogger("talkgate.hotswap")

CAPABILITY_SECTIONS = {"chat": "llm", "asr": "asr", "tts": "tts"}  # settings.local.<section>
HISTORY_LIMIT = 50


# --------------------------------------------------------------------------- the manager


class SwapManager:
    """Owns every capability's version stack and runs one swap per capability at a time."""

    def __init__(self, services: Any) -> None:
        self.services = services
        self._stacks: dict[str, list[Version]] = {}
        self._history: dict[str, list[SwapRecord]] = {c: [] for c in CAPABILITY_SECTIONS}
        self._running: dict[str, SwapRecord] = {}
        self._seq = itertools.count(1)
        self._audit = Path(services.settings.data_dir) / "model_swaps.jsonl"

    # ------------------------------------------------------------------ set-up

    def track_all(self) -> None:
        """Wrap every registered provider so its in-flight calls can be drained (start-up hook)."""
        registry = self.services.registry
        for cap, provider in registry.all():
            if not isinstance(provider, TrackedProvider):
                registry.replace(cap, tracked(provider))

    def inflight(self) -> list[tuple[str, str, int]]:
        return [
            (cap, p.name, p.inflight)
            for cap, p in self.services.registry.all()
            if isinstance(p, TrackedProvider)
        ]

    def _stack(self, capability: str) -> list[Version]:
        stack = self._stacks.get(capability)
        if stack is None:
            self.track_all()
            settings = self.services.settings
            providers = {p.name: p for cap, p in self.services.registry.all() if cap == capability}
            local_models = dict(getattr(settings.local, CAPABILITY_SECTIONS[capability]))
            start = Version("v0", settings.routes[capability], providers, local_models)
            stack = self._stacks[capability] = [start]
        return stack

    # ------------------------------------------------------------------ API

    def status(self, capability: str) -> dict[str, Any]:
        self._check_capability(capability)
        stack = self._stack(capability)
        route = self.services.settings.routes[capability]
        running = self._running.get(capability)
        return {
            "capability": capability,
            "version": stack[-1].label,
            "route": list(route.chain),
            "aliases": dict(route.aliases),
            "providers": [
                {"name": name, "inflight": n} for cap, name, n in self.inflight() if cap == capability
            ],
            "rollback_to": stack[-2].label if len(stack) > 1 else None,
            "in_progress": running.public() if running else None,
            "history": [r.public() for r in reversed(self._history[capability])],
        }

    def get(self, capability: str, swap_id: str) -> SwapRecord | None:
        return next((r for r in self._history.get(capability, ()) if r.id == swap_id), None)

    def swap(self, capability: str, raw: dict[str, Any], who: str) -> SwapRecord:
        self._check_capability(capability)
        try:
            spec = SwapSpec.model_validate(raw)
        except ValidationError as exc:
            raise SwapError(first_error(exc)) from None
        self._validate_targets(capability, spec)
        record = self._begin(capability, "swap", spec.model_dump(exclude_none=True), who)
        record.task = asyncio.create_task(self._run_swap(record, spec))
        return record

    def rollback(self, capability: str, who: str) -> SwapRecord:
        self._check_capability(capability)
        if len(self._stack(capability)) < 2:
            raise SwapError(f"{capability} has no previous version to roll back to", status=409)
        record = self._begin(capability, "rollback", {}, who)
        record.task = asyncio.create_task(self._run_rollback(record))
        return record

    async def close(self) -> None:
        """Shutdown: stop running swaps; unload swapped-in instances (start-up ones unload themselves)."""
        for record in list(self._running.values()):
            if record.task:
                record.task.cancel()
        for stack in self._stacks.values():
            originals = {id(p) for p in stack[0].providers.values()}
            for instance in stack[-1].providers.values():
                if id(instance) not in originals:
                    await _quiet_unload(instance)

    # ------------------------------------------------------------------ the steps

    async def _run_swap(self, record: SwapRecord, spec: SwapSpec) -> None:
        cap = record.capability
        settings = self.services.settings
        old = self._stack(cap)[-1]
        fresh: TrackedProvider | None = None
        try:
            route = repointed_route(settings.routes[cap], spec) if spec.route else settings.routes[cap]
            section = CAPABILITY_SECTIONS[cap]
            version = Version(
                label=f"v{next(self._seq)}",
                route=route,
                providers=dict(old.providers),
                local_models=dict(getattr(settings.local, section)),
            )
            if spec.provider:
                record.status = "loading"
                fresh = await self._build_instance(cap, spec, version)
            if spec.probe:
                record.status = "probing"
                await self._probe(cap, version, fresh)
            self._commit(cap, version)
            self._stack(cap).append(version)
            record.version = version.label
            outgoing = [p for n, p in old.providers.items() if version.providers.get(n) is not p]
            record.drained = await self._retire(record, outgoing)
            self._finish(record, "done")
        except BaseException as exc:
            if fresh is not None and self._stack(cap)[-1].providers.get(fresh.name) is not fresh:
                await _quiet_unload(fresh)
            self._finish(record, "failed", exc)
            if not isinstance(exc, Exception):
                raise

    async def _run_rollback(self, record: SwapRecord) -> None:
        cap = record.capability
        stack = self._stack(cap)
        current, previous = stack[-1], stack[-2]
        try:
            incoming = [p for n, p in previous.providers.items() if current.providers.get(n) is not p]
            if incoming:
                record.status = "loading"
            for instance in incoming:
                await instance.inner.load()
                if current.swapped_model in instance.models():
                    await _warm(instance, current.swapped_model)
            self._commit(cap, previous)
            stack.pop()
            record.version = previous.label
            outgoing = [p for n, p in current.providers.items() if previous.providers.get(n) is not p]
            record.drained = await self._retire(record, outgoing)
            self._finish(record, "done")
        except BaseException as exc:
            self._finish(record, "failed", exc)
            if not isinstance(exc, Exception):
                raise

    async def _build_instance(self, cap: str, spec: SwapSpec, version: Version) -> TrackedProvider:
        """A new, loaded instance of the named provider with one model's settings changed."""
        current = version.providers.get(spec.provider or "")
        if current is None:
            raise SwapError(f"no {cap} provider named '{spec.provider}' is registered")
        inner = current.inner
        section = getattr(inner, "section", None)
        if not section or not hasattr(inner, "pool"):
            raise SwapError(
                f"provider '{spec.provider}' cannot be rebuilt with new model files; "
                'to move traffic between cloud models re-point the route with {"route": [...]}'
            )
        configs = version.local_models
        base = configs.get(spec.model) or next(iter(configs.values()), None)
        if base is None:
            raise SwapError(f"no local {section} model is configured to copy settings from")
        try:
            new_cfg = type(base).model_validate({**base.model_dump(), **spec.model_settings()})
        except ValidationError as exc:
            raise SwapError(first_error(exc)) from None
        configs[spec.model] = new_cfg
        settings = self.services.settings
        new_local = settings.local.model_copy(update={section: dict(configs)})
        instance = tracked(type(inner)(settings.model_copy(update={"local": new_local}), inner.pool))
        await instance.inner.load()
        await _warm(instance, spec.model)
        version.providers[instance.name] = instance
        version.swapped_model = spec.model
        return instance

    async def _probe(self, cap: str, version: Version, fresh: TrackedProvider | None) -> None:
        """One tiny real request to the new version: its new instance, else its first target."""
        settings = self.services.settings
        if fresh is not None:
            provider, model = fresh.inner, version.swapped_model or ""
        else:
            name, _, model = version.route.chain[0].partition(":")
            if name not in version.providers:
                raise SwapError(f"no {cap} provider named '{name}' is registered")
            provider = version.providers[name].inner
        local_voice = settings.voices.local.get("*", settings.voices.default)
        voice = local_voice if provider.name == "local" else settings.voices.default
        if cap == "chat":
            call = provider.chat(
                ChatRequest(model=model, messages=[{"role": "user", "content": "ping"}], max_tokens=1)
            )
        elif cap == "asr":
            silence = AudioData(pcm=b"\x00\x00" * 8000, sample_rate=16000)
            call = provider.transcribe(TranscribeRequest(model=model, audio=silence))
        else:
            call = provider.synthesize(SynthesizeRequest(model=model, text="Hello.", voice=voice))
        await asyncio.wait_for(call, min(settings.upstream_timeout_s, 60.0))

    def _commit(self, cap: str, version: Version) -> None:
        """The switch: each assignment is atomic, and a request reads them once when it starts."""
        settings = self.services.settings
        registry = self.services.registry
        setattr(settings.local, CAPABILITY_SECTIONS[cap], dict(version.local_models))
        for instance in version.providers.values():
            if registry.get(cap, instance.name) is not instance:
                registry.replace(cap, instance)
        settings.routes[cap] = version.route
        if self.services.experiments is not None:  # variant chains live on the route object
            self.services.experiments.register_routes()

    async def _retire(self, record: SwapRecord, outgoing: list[TrackedProvider]) -> bool | None:
        """Wait for the outgoing instances' in-flight calls, then unload them."""
        if not outgoing:
            return None
        record.status = "draining"
        timeout = float(record.spec.get("drain_timeout_s", 30.0))
        drained = True
        for instance in outgoing:
            if not await instance.drained(timeout):
                drained = False
                log.warning(
                    "swap %s: %d calls still in flight after %.0fs", record.id, instance.inflight, timeout
                )
            await _quiet_unload(instance)
        return drained

    # ------------------------------------------------------------------ bookkeeping

    def _begin(self, capability: str, kind: str, spec: dict[str, Any], who: str) -> SwapRecord:
        if capability in self._running:
            running = self._running[capability]
            raise SwapError(f"swap {running.id} on {capability} is still {running.status}", status=409)
        record = SwapRecord(
            id=f"swap-{uuid.uuid4().hex[:12]}", capability=capability, kind=kind, spec=spec, who=who,
            requested_at=time.time(),
        )  # fmt: skip
        self._running[capability] = record
        history = self._history[capability]
        history.append(record)
        del history[:-HISTORY_LIMIT]
        log.info("model %s requested", kind, extra={"swap": record.public()})
        return record

    def _finish(self, record: SwapRecord, status: str, exc: BaseException | None = None) -> None:
        record.status = status
        record.finished_at = time.time()
        if exc is not None:
            record.error = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        self._running.pop(record.capability, None)
        metrics = self.services.metrics
        if metrics is not None:
            metrics.swap(record.capability, record.kind, status)
        level = logging.INFO if status == "done" else logging.WARNING
        log.log(level, "model %s %s", record.kind, status, extra={"swap": record.public()})
        try:
            self._audit.parent.mkdir(parents=True, exist_ok=True)
            with self._audit.open("ab") as fh:
                fh.write(orjson.dumps(record.public()) + b"\n")
        except OSError:
            log.exception("cannot append to %s", self._audit)

    def _check_capability(self, capability: str) -> None:
        if capability not in CAPABILITY_SECTIONS:
            raise SwapError(f"unknown capability '{capability}'; use chat, asr or tts", status=404)

    def _validate_targets(self, capability: str, spec: SwapSpec) -> None:
        for target in spec.route or ():
            name = target.partition(":")[0]
            if self.services.registry.get(capability, name) is None:
                raise SwapError(
                    f"route target {target}: no {capability} provider named '{name}' is registered"
                )


async def _warm(instance: TrackedProvider, model: str | None) -> None:
    """Load one model of a local provider now (it would otherwise load on its first call)."""
    if model and hasattr(instance.inner, "model"):
        await instance.inner.model(model)


async def _quiet_unload(instance: TrackedProvider) -> None:
    try:
        await instance.inner.unload()
    except Exception:
        log.exception("unloading a failed swap's instance")
