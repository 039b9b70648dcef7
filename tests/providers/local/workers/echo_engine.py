"""A tiny engine for the worker tests: answers at once, streams slowly, or misbehaves on request.

It is the seam fake for ``providers/local/workers`` (the real engines are tested with their
real models in ``tests/providers/local``); the worker loads it by name, in its own process.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from typing import Any

from providers.base import ErrorKind, ProviderError
from providers.local.workers.faults import fire


class EchoEngine:
    methods = frozenset({"echo", "count", "sleep", "span", "stuck", "fail", "crash", "pid"})

    def __init__(self, spec: Any) -> None:
        if spec.options.get("fail_load"):
            raise ProviderError(ErrorKind.UNAVAILABLE, "cannot load: asked to fail", code="ModelUnavailable")
        if spec.options.get("crash_load"):
            fire("segv")
        self.options = spec.options

    def info(self) -> dict[str, Any]:
        return {"pid": os.getpid()}

    def echo(self, value: Any, *, cancelled: threading.Event) -> Any:
        return value

    def pid(self, *, cancelled: threading.Event) -> int:
        return os.getpid()

    def count(self, n: int, delay_s: float, *, cancelled: threading.Event) -> Iterator[int]:
        for i in range(n):
            time.sleep(delay_s)
            yield i

    def sleep(self, seconds: float, *, cancelled: threading.Event) -> str:
        """Honours cancellation, as the real engines do between tokens or sentences."""
        return "cancelled" if cancelled.wait(seconds) else "slept"

    def span(self, seconds: float, *, cancelled: threading.Event) -> tuple[float, float]:
        """(start, end) on CLOCK_MONOTONIC, which every process of the machine shares: the
        tests compare spans to see calls overlap, whatever the scheduling delays around them."""
        start = time.monotonic()
        cancelled.wait(seconds)
        return start, time.monotonic()

    def stuck(self, seconds: float, *, cancelled: threading.Event) -> str:
        """A native call that never looks at the cancel flag."""
        time.sleep(seconds)
        return "finished"

    def fail(self, kind: str, *, cancelled: threading.Event) -> None:
        if kind == "provider":
            raise ProviderError(ErrorKind.BAD_REQUEST, "the engine refused this input", code="InvalidInput")
        raise RuntimeError("an engine bug")

    def crash(self, action: str, *, cancelled: threading.Event) -> None:
        fire(action)
