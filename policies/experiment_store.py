"""Where admin-created experiments are kept: a JSON file per replica and one shared Redis copy.

Split from ``policies.experiments``: the registry decides what the rows are, these two classes
only move them. The file is replaced atomically so a crash never leaves half of it; the Redis
copy lets every replica adopt a change made through any one of them.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger("talkgate.experiments")

#: Redis key holding the admin-created experiments shared by every replica.
REDIS_KEY = "tg:experiments"


class ExperimentFile:
    """Rows (``{"spec": ..., "created_at": ...}``) in one JSON file under ``data_dir``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> list[dict[str, Any]]:
        """The stored rows; none when the file is missing or unreadable (logged, not fatal)."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError):
            log.exception("cannot read %s; admin-created experiments are not restored", self.path)
            return []
        return list(data.get("experiments", []))

    def save(self, rows: list[dict[str, Any]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"experiments": rows}, indent=2), encoding="utf-8")
        os.replace(tmp, self.path)  # atomic: a crash never leaves half a file


class SharedCopy:
    """The Redis document every replica reads; remembers the last one adopted or published."""

    def __init__(self) -> None:
        self.last: str | None = None

    async def publish(self, redis: Any, rows: list[dict[str, Any]]) -> None:
        doc = json.dumps({"experiments": rows}, sort_keys=True)
        await redis.set(REDIS_KEY, doc)
        self.last = doc

    async def read(self, redis: Any) -> str | None:
        """The shared document as text, or None when no replica has published one yet."""
        raw = await redis.get(REDIS_KEY)
        if raw is None:
            return None
        return raw.decode() if isinstance(raw, bytes) else str(raw)

    @staticmethod
    def rows(doc: str) -> list[dict[str, Any]]:
        return list(json.loads(doc).get("experiments", []))
