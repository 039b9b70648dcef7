"""All route modules; each owns one area of the external contract."""

from __future__ import annotations

import importlib
import logging

from fastapi import APIRouter

log = logging.getLogger("talkgate.routes")

# Module names under gateway.routes, each exposing `router`.
_MODULES = (
    "health",
    "models",
    "chat",
    "audio",
    "avatars",
    "talk",
    "admin",
    "admin_providers",
    "admin_models",
    "admin_experiments",
    "ops",
)


def _load() -> list[APIRouter]:
    routers = []
    for name in _MODULES:
        try:
            mod = importlib.import_module(f"gateway.routes.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"gateway.routes.{name}":
                continue  # not built yet
            raise
        routers.append(mod.router)
    return routers


ROUTERS = _load()
