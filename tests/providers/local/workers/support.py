"""Helpers for the worker tests: an echo-engine supervisor and process checks."""

from __future__ import annotations

import os
import time
from typing import Any

from providers.local.workers.ipc import LoadSpec
from providers.local.workers.supervisor import RestartPolicy, WorkerStats, WorkerSupervisor

ENGINE = "tests.providers.local.workers.echo_engine:EchoEngine"
FAST = RestartPolicy(
    backoff_initial_s=0.2, backoff_max_s=1.0, crash_window_s=30, max_crashes=3, cancel_grace_s=0.5
)


class Config:
    concurrency = 2


def echo_worker(policy: RestartPolicy = FAST, **options: Any) -> WorkerSupervisor:
    spec = LoadSpec(ENGINE, "echo", Config(), None, options)
    return WorkerSupervisor(spec, label="echo model", policy=policy, stats=WorkerStats("echo", "echo"))


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie awaiting its parent's wait() counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def wait_gone(pid: int, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return not alive(pid)


def children_of(pid: int) -> list[int]:
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                found.extend(int(p) for p in fh.read().split())
        except FileNotFoundError:
            continue
    return found
