"""Load/unload/health shared by the three Bailian providers (they share one client)."""

from __future__ import annotations

from typing import Any

from providers.base import Health
from providers.cloud.client import DashScopeClient


class CloudLifecycle:
    """Holds a reference on the shared ``DashScopeClient`` between ``load`` and ``unload``."""

    name = "bailian"

    def __init__(self, settings: Any, client: DashScopeClient | None = None) -> None:
        self.settings = settings
        self.client = client or DashScopeClient(settings)
        self._loaded = False

    @property
    def loaded(self) -> bool:
        return self._loaded

    async def load(self) -> None:
        if not self._loaded:
            await self.client.open()
            self._loaded = True

    async def unload(self) -> None:
        if self._loaded:
            self._loaded = False
            await self.client.close()

    async def health(self) -> Health:
        """Configuration and lifecycle state only: never a network call."""
        if not self.client.configured:
            return Health(ok=False, detail="no DASHSCOPE_API_KEY configured")
        if not self._loaded:
            return Health(ok=False, detail=f"configured for {self.client.http_base}; not loaded")
        return Health(ok=True, detail=f"configured for {self.client.http_base}; loaded")
