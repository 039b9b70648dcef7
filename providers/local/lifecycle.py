"""What the three local providers share: configured models, one worker process per model, limits, health.

Every model runs in its own supervised worker process (``providers/local/workers/``), never
in the gateway: a segfault, abort or OOM kill in llama.cpp, CTranslate2 or onnxruntime fails
only the calls that worker was running, as ``unavailable`` (the router then moves on), and the
worker is restarted with back-off. A model loads when its worker starts (on its first call,
or at start-up with ``local.preload``). ``unload`` waits for the calls in flight, then stops
the workers.

A call holds its model's ``concurrency`` slot and one of the pool's ``workers`` slots until
the worker has really finished it, not merely until its caller went away.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from providers.base import Health, ProviderError
from providers.local.models import require_module, unavailable
from providers.local.pool import Limit, ModelPool
from providers.local.workers.ipc import LoadSpec
from providers.local.workers.supervisor import WorkerSupervisor

log = logging.getLogger("talkgate.local")


class LocalModels:
    """Base for a local provider serving the models configured under ``settings.local.<section>``."""

    name = "local"
    #: key in ``settings.local`` ("llm", "asr", "tts") and the words used in messages
    section = ""
    kind = ""
    #: the engine's import name and the package that provides it (checked in the gateway)
    engine_module = ""
    engine_package = ""
    #: "module:Class" the worker process loads (see ``providers/local/workers/child.py``)
    engine_class = ""

    def __init__(self, settings: Any, pool: ModelPool) -> None:
        self.settings = settings
        self.pool = pool
        self._configs: dict[str, Any] = dict(getattr(settings.local, self.section))
        self._limits = {name: Limit(cfg.concurrency, name) for name, cfg in self._configs.items()}
        self._workers: dict[str, WorkerSupervisor] = {}

    # ------------------------------------------------------------------ to implement

    def _locate(self, name: str, config: Any) -> Any:
        """The model's files; raises ProviderError(UNAVAILABLE) with a helpful message."""
        raise NotImplementedError

    def _options(self, name: str, config: Any) -> dict[str, Any]:
        """Extra values the engine needs at load time (picklable)."""
        return {}

    # ------------------------------------------------------------------ lifecycle

    def models(self) -> list[str]:
        return list(self._configs)

    def config(self, name: str) -> Any:
        try:
            return self._configs[name]
        except KeyError:
            raise unavailable(
                f"local {self.kind} model '{name}' is not configured; configured: "
                f"{', '.join(self._configs) or 'none'} (settings: local.{self.section})"
            ) from None

    def limit(self, name: str) -> Limit:
        return self._limits[name]

    def is_loaded(self, name: str) -> bool:
        worker = self._workers.get(name)
        return worker is not None and worker.loaded

    def worker(self, name: str) -> WorkerSupervisor:
        """The supervisor of model ``name``'s worker (created, not started, on first use)."""
        worker = self._workers.get(name)
        if worker is not None:
            return worker
        config = self.config(name)
        require_module(self.engine_module, self.engine_package)
        files = self._locate(name, config)
        spec = LoadSpec(self.engine_class, name, config, files, self._options(name, config))
        worker = self.pool.supervisor(
            spec, engine=self.engine_module, label=f"local {self.kind} model '{name}'"
        )
        return self._workers.setdefault(name, worker)

    async def model(self, name: str) -> dict[str, Any]:
        """Start the model's worker (loading the model) if need be; returns what the engine reported."""
        worker = self.worker(name)
        log.debug("loading local %s model %s", self.kind, name)
        process = await worker.ensure()
        return process.info

    async def call(self, name: str, method: str, *args: Any) -> Any:
        """One call on model ``name``'s worker, within the model's and the pool's limits."""
        worker = self.worker(name)
        release = await self.pool.acquire((self.limit(name),))
        return await worker.call(method, *args, on_end=release)  # the worker releases the slots

    async def stream(self, name: str, method: str, *args: Any) -> AsyncIterator[Any]:
        """A streaming call; items arrive as the worker produces them."""
        worker = self.worker(name)
        release = await self.pool.acquire((self.limit(name),))
        async with aclosing(worker.stream(method, *args, on_end=release)) as items:
            async for item in items:
                yield item

    async def preload(self) -> None:
        """Load every configured model now."""
        for name in self._configs:
            await self.model(name)

    async def load(self) -> None:
        """Start-up hook: preload when ``local.preload``; a missing model is logged, not fatal
        (the gateway must still start and serve the cloud; health reports the gap)."""
        if not self.settings.local.preload:
            return
        for name in self._configs:
            try:
                await self.model(name)
            except ProviderError as exc:
                log.warning("local %s model %s not loaded: %s", self.kind, name, exc.message)

    async def unload(self) -> None:
        """Stop every worker of this instance once its calls in flight have ended.

        A later call (e.g. a hot-swap rollback re-loading this instance) starts a new worker.
        """
        workers, self._workers = list(self._workers.values()), {}
        for worker in workers:
            await worker.drain(self.settings.local.drain_timeout_s)
            await asyncio.to_thread(worker.stop)
            self.pool.forget(worker)

    async def health(self) -> Health:
        """Files present / worker state per model; never loads a model or reaches the network.

        A model whose worker keeps crashing is listed in ``unhealthy_models``; the provider stays
        ok while another of its models can serve.
        """
        files_ok = True
        parts: list[str] = []
        crashing: dict[str, str] = {}
        for name, config in self._configs.items():
            worker = self._workers.get(name)
            if worker is not None:
                healthy, state = worker.health()
                if not healthy:
                    crashing[name] = state
                if worker.loaded or not healthy:
                    parts.append(f"{name}: {state}")
                    continue
            try:
                require_module(self.engine_module, self.engine_package)
                self._locate(name, config)
            except Exception as exc:
                files_ok = False
                parts.append(f"{name}: {getattr(exc, 'message', exc)}")
            else:
                parts.append(f"{name}: ready (not loaded)")
        ok = files_ok and len(crashing) < len(self._configs)
        return Health(ok=ok, detail="; ".join(parts) or "no models configured", unhealthy_models=crashing)
