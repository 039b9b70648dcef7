"""Fault drills for engine workers: make a worker crash the way native code does, on purpose.

Set ``TALKGATE_WORKER_FAULT`` in the gateway's environment (workers inherit it) to a JSON
object, or a list of them; the worker serving ``model`` then fails its matching call:

- ``action``: ``segv`` (reads address 0 through ctypes: a real segmentation fault),
  ``abort`` (``os.abort()``: SIGABRT, as a failed C assertion), ``kill`` (SIGKILL itself, as
  the OOM killer does) or ``hang`` (blocks forever in the call, ignoring cancellation);
- ``method``: the engine method (``complete``, ``stream``, ``transcribe``, ``synthesize``), or
  ``*`` for any; ``after_items``: for a stream, how many items to send first (default 0);
- ``once_file``: when given, the fault fires only while that file does not exist (the worker
  creates it just before failing), so the restarted worker behaves.

This is how the tests prove that a native crash never takes the gateway down, and how an
operator can rehearse it; without the variable nothing here runs.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import threading
from dataclasses import dataclass
from pathlib import Path

ENV = "TALKGATE_WORKER_FAULT"
ACTIONS = ("segv", "abort", "kill", "hang")


@dataclass(frozen=True, slots=True)
class Fault:
    model: str
    action: str
    method: str = "*"
    after_items: int = 0
    once_file: str | None = None

    @classmethod
    def from_env(cls, model: str) -> Fault | None:
        raw = os.environ.get(ENV)
        if not raw:
            return None
        specs = json.loads(raw)
        spec = next(
            (s for s in (specs if isinstance(specs, list) else [specs]) if s.get("model") == model), None
        )
        if spec is None:
            return None
        if spec.get("action") not in ACTIONS:
            raise ValueError(f"{ENV}: action must be one of {', '.join(ACTIONS)}")
        return cls(
            model=model,
            action=spec["action"],
            method=spec.get("method", "*"),
            after_items=int(spec.get("after_items", 0)),
            once_file=spec.get("once_file"),
        )

    def check(self, method: str, items_sent: int) -> None:
        """Fail now if this call at this point is the one the drill names."""
        if self.method not in ("*", method) or items_sent != self.after_items:
            return
        if self.once_file is not None:
            marker = Path(self.once_file)
            if marker.exists():
                return
            marker.touch()
        fire(self.action)


def fire(action: str) -> None:
    if action == "segv":
        ctypes.string_at(0)
    elif action == "abort":
        os.abort()
    elif action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "hang":
        threading.Event().wait()
