"""Who is calling: the Principal, and the per-route scope dependency.

Bring-up stub: every request is the anonymous local principal. The SaaS layer replaces
the body of ``require_scope`` (API keys, scopes, rate limits, quotas, concurrency slots)
without changing its signature, so routes need no edits.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import Depends, Request

SCOPES = ("chat", "asr", "tts", "talk", "avatars", "admin")


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: str | None
    tenant: str
    scopes: frozenset[str] = field(default_factory=lambda: frozenset(SCOPES))
    limits: dict[str, Any] = field(default_factory=dict)


ANONYMOUS = Principal(key_id=None, tenant="default")


def require_scope(scope: str) -> Any:
    """FastAPI dependency: authenticate and authorise the caller for ``scope``."""

    async def dependency(request: Request) -> AsyncIterator[Principal]:
        yield ANONYMOUS

    return Depends(dependency)
