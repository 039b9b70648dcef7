"""Talk outputs (MP4 and WAV) under ``<data_dir>/artifacts``, deleted after a time-to-live.

Names are random 128-bit tokens, so a URL is only known to whoever received it. Each file
also lives in its tenant's own sub-directory, so a name is looked up only among the files of
the tenant asking: a URL leaked to another tenant still finds nothing. Expired files are
swept by a background task and are never served, even between sweeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import time
import uuid
from pathlib import Path

log = logging.getLogger("talkgate.lipsync")
_NAME_RE = re.compile(r"^tk_[0-9a-f]{32}\.(mp4|wav)$")
MEDIA_TYPES = {"mp4": "video/mp4", "wav": "audio/wav"}


class ArtifactStore:
    def __init__(self, root: Path, ttl_s: float) -> None:
        self.root = Path(root)
        self.ttl_s = ttl_s
        self._task: asyncio.Task[None] | None = None

    def new_stem(self) -> str:
        return f"tk_{uuid.uuid4().hex}"

    def tenant_dir(self, tenant: str) -> Path:
        # A digest, not the id itself: any tenant id is a safe, fixed-length directory name.
        return self.root / f"t_{hashlib.sha256(tenant.encode('utf-8')).hexdigest()[:32]}"

    def path_for(self, name: str, tenant: str) -> Path:
        folder = self.tenant_dir(tenant)
        folder.mkdir(parents=True, exist_ok=True)
        return folder / name

    def lookup(self, name: str, tenant: str) -> Path | None:
        """The tenant's file for a public name, or None if unknown, malformed, another
        tenant's or expired (then deleted)."""
        if not _NAME_RE.match(name):
            return None
        path = self.tenant_dir(tenant) / name
        try:
            age = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            return None
        if age > self.ttl_s:
            path.unlink(missing_ok=True)
            return None
        return path

    def sweep(self) -> int:
        """Delete expired artifacts; returns how many."""
        if not self.root.is_dir():
            return 0
        cutoff = time.time() - self.ttl_s
        removed = 0
        # Tenant sub-directories, plus files left at the top level by older versions.
        for path in [*self.root.glob("*/tk_*"), *self.root.glob("tk_*")]:
            try:
                if path.is_file() and path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        return removed

    async def _loop(self) -> None:
        interval = max(1.0, min(60.0, self.ttl_s / 4))
        while True:
            try:
                await asyncio.to_thread(self.sweep)
            except Exception:
                log.exception("artifact sweep failed")
            await asyncio.sleep(interval)

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="talk-artifact-sweeper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    @staticmethod
    def media_type(name: str) -> str:
        return MEDIA_TYPES.get(name.rsplit(".", 1)[-1], "application/octet-stream")
