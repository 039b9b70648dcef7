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
    "embeddings",
    "avatars",
    "talk",
    "admin",
    "admin_providers",
    "admin_models",
    "admin_experiments",
    "ops",
    "realtime",
    "files",
    "vector_stores",
    "file_batches",
    "admin_knowledge",
    "voices",
    "dashscope",
    "realtime_calls",
    "demo",
)


#: Route modules that live in their own package (protocol adapters), by short name.
_ELSEWHERE = {"realtime": "gateway.realtime.route"}


def _load() -> list[APIRouter]:
    routers = []
    for name in _MODULES:
        module = _ELSEWHERE.get(name, f"gateway.routes.{name}")
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name == module:
                continue  # not built yet
            raise
        routers.append(mod.router)
    return routers


ROUTERS = _load()
