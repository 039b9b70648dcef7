"""FrameGuard: the frame limits every realtime transport shares, on a fake clock."""

from __future__ import annotations

from gateway.realtime.config import RealtimeConfig
from gateway.realtime.guard import FrameGuard


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_oversized_frames_are_refused() -> None:
    guard = FrameGuard(RealtimeConfig(max_event_bytes=100), Clock())
    assert guard.check(100) is None
    error = guard.check(101)
    assert error is not None and error["error"]["code"] == "event_too_large"
    assert "101 bytes" in error["error"]["message"]


def test_event_rate_allows_a_burst_then_refills() -> None:
    clock = Clock()
    guard = FrameGuard(RealtimeConfig(max_events_per_s=10), clock)
    allowed = [guard.check(10) is None for _ in range(25)]
    assert allowed == [True] * 20 + [False] * 5  # a burst of twice the rate
    refused = guard.check(10)
    assert refused is not None and refused["error"]["type"] == "rate_limit_error"
    clock.now += 0.5  # five more tokens
    assert [guard.check(10) is None for _ in range(6)] == [True] * 5 + [False]


def test_abuse_counts_refusals_here_and_in_the_session() -> None:
    guard = FrameGuard(RealtimeConfig(max_event_bytes=1, max_errors=5), Clock())
    for _ in range(3):
        guard.check(2)
    assert not guard.abusive(1)
    assert guard.abusive(2)


def test_idle_and_session_length() -> None:
    clock = Clock()
    guard = FrameGuard(RealtimeConfig(idle_timeout_s=10, max_session_s=25), clock)
    assert guard.expired() is None and guard.wait_s() == 10
    clock.now += 9
    guard.check(1)  # activity resets idleness
    clock.now += 9
    assert guard.expired() is None and guard.wait_s() == 1
    clock.now += 1
    assert guard.expired() == "idle"
    guard.check(1)
    clock.now += 6  # 25 s since opening
    assert guard.expired() == "max_session"
