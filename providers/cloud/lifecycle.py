"""Load/unload/health of providers that share one client: the Bailian providers (one
``DashScopeClient``) and the NLS providers (one ``NlsClient``)."""

from __future__ import annotations

from typing import Any

from providers.base import Health
from providers.cloud.client import DashScopeClient


class SharedClientLifecycle:
    """Holds a reference on a shared client (``open``/``close``) between ``load`` and ``unload``."""

    name = ""
    client: Any

    def __init__(self, client: Any) -> None:
        self.client = client
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


class CloudLifecycle(SharedClientLifecycle):
    """The Bailian providers' lifecycle over the shared ``DashScopeClient``."""

    name = "bailian"

    def __init__(self, settings: Any, client: DashScopeClient | None = None) -> None:
        self.settings = settings
        super().__init__(client or DashScopeClient(settings))

    async def health(self) -> Health:
        """Configuration and lifecycle state only: never a network call."""
        if not self.client.configured:
            return Health(ok=False, detail="no DASHSCOPE_API_KEY configured")
        if not self._loaded:
            return Health(ok=False, detail=f"configured for {self.client.http_base}; not loaded")
        return Health(ok=True, detail=f"configured for {self.client.http_base}; loaded")
