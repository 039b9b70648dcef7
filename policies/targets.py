"""Route targets (``provider:model``), the unknown-model error, and the provider registry.

Kept apart from the router so that code which only names or looks up targets (settings,
hot swap, admin views) does not need the chain-walking machinery.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from providers.base import Capability

__all__ = ["ProviderRegistry", "Target", "UnknownModelError"]


@dataclass(frozen=True, slots=True)
class Target:
    provider: str  # "bailian" | "local"
    model: str

    @classmethod
    def parse(cls, spec: str) -> Target:
        provider, sep, model = spec.partition(":")
        if not sep or not provider or not model:
            raise ValueError(f"route target {spec!r} must look like 'provider:model'")
        return cls(provider, model)

    def __str__(self) -> str:
        return f"{self.provider}:{self.model}"


class UnknownModelError(Exception):
    def __init__(self, capability: str, model: str, available: list[str]) -> None:
        super().__init__(
            f"The model '{model}' does not exist for {capability}. Available: {', '.join(available) or 'none'}"
        )
        self.capability = capability
        self.model = model
        self.available = available


class ProviderRegistry:
    """Provider instances by capability and backend family ("bailian", "local")."""

    def __init__(self) -> None:
        self._by_cap: dict[str, dict[str, Any]] = {
            "chat": {},
            "asr": {},
            "tts": {},
            "embedding": {},
            "rerank": {},
        }

    def register(self, capability: Capability, provider: Any) -> None:
        self._by_cap[capability][provider.name] = provider

    def replace(self, capability: Capability, provider: Any) -> Any | None:
        old = self._by_cap[capability].get(provider.name)
        self._by_cap[capability][provider.name] = provider
        return old

    def get(self, capability: Capability, name: str) -> Any | None:
        return self._by_cap[capability].get(name)

    def all(self) -> list[tuple[str, Any]]:
        return [(cap, p) for cap, d in self._by_cap.items() for p in d.values()]
