"""Limits on the frames of one realtime connection, checked before an event is parsed.

Shared by every transport of the realtime protocol (the WebSocket and the WebRTC data channel):
an oversized frame or a burst beyond the event rate gets an ``error`` event and is dropped; a
client that keeps getting errors is abusive and its connection is closed. Session length and
idleness are measured here too, so the transport only asks ``expired()``.
"""

from __future__ import annotations

import time
from typing import Any

from gateway.realtime.config import RealtimeConfig
from gateway.realtime.events import error_event


class FrameGuard:
    def __init__(self, config: RealtimeConfig, clock: Any = time.monotonic) -> None:
        self.config = config
        self.clock = clock
        self.opened = self.last = clock()
        self.tokens = 2 * config.max_events_per_s
        self.errors = 0

    def check(self, size: int) -> dict[str, Any] | None:
        """None if the frame may be handled; else the ``error`` event to send instead."""
        now = self.clock()
        rate = self.config.max_events_per_s
        self.tokens = min(2 * rate, self.tokens + (now - self.last) * rate)
        self.last = now
        if size > self.config.max_event_bytes:
            self.errors += 1
            return error_event(
                f"The event is {size} bytes, more than the {self.config.max_event_bytes} allowed; "
                "send audio in smaller appends.",
                "event_too_large",
            )
        if self.tokens < 1:
            self.errors += 1
            return error_event(
                f"More than {rate:g} events per second: this event was dropped.",
                "rate_limit_exceeded",
                type_="rate_limit_error",
            )
        self.tokens -= 1
        return None

    def abusive(self, refused_by_session: int) -> bool:
        """Too many refused events (here and by the session): the client is broken or hostile.
        Errors of the models (a failed response) never count: they are not the client's."""
        return self.errors + refused_by_session >= self.config.max_errors

    def expired(self) -> str | None:
        """``"max_session"`` or ``"idle"`` when the connection must close, else None."""
        now = self.clock()
        if now - self.opened >= self.config.max_session_s:
            return "max_session"
        if now - self.last >= self.config.idle_timeout_s:
            return "idle"
        return None

    def wait_s(self) -> float:
        """How long the transport may wait for the next frame before ``expired()`` must be asked."""
        now = self.clock()
        return max(
            0.0,
            min(self.opened + self.config.max_session_s, self.last + self.config.idle_timeout_s) - now,
        )
