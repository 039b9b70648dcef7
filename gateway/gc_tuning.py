"""Garbage-collector settings for a long-running gateway process.

Why: after start-up the process holds a few hundred thousand long-lived objects (FastAPI,
pydantic, SQLAlchemy, model runtimes). CPython's full (generation 2) collection walks all of
them, which measured 100-240 ms on the 2-core CI VM, and under 32 concurrent clients it ran
every few hundred requests: the main cause of the P99 tail. ``gc.freeze()`` moves everything
alive at start-up into the permanent generation, which collections skip, and a larger
generation-0 threshold lets short-lived request objects die by reference counting before a
collection promotes them. Cyclic garbage is still collected, only start-up objects are exempt.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger("talkgate.gc")

_frozen = False


def settle_after_startup(freeze: bool, gen0_threshold: int) -> None:
    """Collect once, then freeze what survived (once per process) and set the gen-0 threshold.

    ``gen0_threshold`` <= 0 keeps CPython's thresholds.
    """
    global _frozen
    if gen0_threshold > 0:
        _, gen1, gen2 = gc.get_threshold()
        gc.set_threshold(gen0_threshold, gen1, gen2)
    if freeze and not _frozen:
        _frozen = True  # a second app in the same process (tests) must not freeze its garbage
        gc.collect()
        gc.freeze()
        log.debug("gc: %d start-up objects frozen", gc.get_freeze_count())
