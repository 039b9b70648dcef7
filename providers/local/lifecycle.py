"""What the three local providers share: configured models, lazy one-time loading, limits, health.

A model is loaded once per process (on its first call, or at start-up with
``local.preload``) and shared by every request; loading runs on the model pool so the
event loop never waits on disk or on a native library. ``unload`` only drops the
references: a call still running on a worker keeps its model alive until it returns,
so unloading can never free a model under a running call.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Generic, TypeVar

from providers.base import Health, ProviderError
from providers.local.models import require_module, unavailable
from providers.local.pool import Limit, ModelPool

log = logging.getLogger("talkgate.local")
M = TypeVar("M")


class LocalModels(Generic[M]):
    """Base for a local provider serving the models configured under ``settings.local.<section>``."""

    name = "local"
    #: key in ``settings.local`` ("llm", "asr", "tts") and the words used in messages
    section = ""
    kind = ""
    #: the engine's import name and the package that provides it
    engine_module = ""
    engine_package = ""

    def __init__(self, settings: Any, pool: ModelPool) -> None:
        self.settings = settings
        self.pool = pool
        self._configs: dict[str, Any] = dict(getattr(settings.local, self.section))
        self._limits = {name: Limit(cfg.concurrency, name) for name, cfg in self._configs.items()}
        self._loaded: dict[str, M] = {}
        self._load_lock = threading.Lock()

    # ------------------------------------------------------------------ to implement

    def _locate(self, name: str, config: Any) -> Any:
        """The model's files; raises ProviderError(UNAVAILABLE) with a helpful message."""
        raise NotImplementedError

    def _open(self, name: str, config: Any, files: Any) -> M:
        """Load the model from its files (blocking; runs on a worker thread)."""
        raise NotImplementedError

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
        return name in self._loaded

    def _load_sync(self, name: str) -> M:
        with self._load_lock:
            model = self._loaded.get(name)
            if model is None:
                config = self.config(name)
                require_module(self.engine_module, self.engine_package)
                files = self._locate(name, config)
                log.info("loading local %s model %s from %s", self.kind, name, files)
                model = self._open(name, config, files)
                self._loaded[name] = model
            return model

    async def model(self, name: str) -> M:
        """The loaded model, loading it on a worker on first use."""
        model = self._loaded.get(name)
        if model is not None:
            return model
        self.config(name)  # fail fast, without a pool slot, on an unknown name
        return await self.pool.run(self._load_sync, name)

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
        with self._load_lock:
            self._loaded.clear()

    async def health(self) -> Health:
        """Files present / loaded per model; no network, no loading."""
        ok = True
        parts: list[str] = []
        for name, config in self._configs.items():
            if name in self._loaded:
                parts.append(f"{name}: loaded")
                continue
            try:
                require_module(self.engine_module, self.engine_package)
                self._locate(name, config)
            except Exception as exc:
                ok = False
                parts.append(f"{name}: {getattr(exc, 'message', exc)}")
            else:
                parts.append(f"{name}: ready (not loaded)")
        return Health(ok=ok and bool(self._configs), detail="; ".join(parts) or "no models configured")
