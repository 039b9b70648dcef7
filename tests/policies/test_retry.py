"""The retry policy: which errors it retries, how long it waits, and that it respects the deadline."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from policies.retry import Deadline, RetryPolicy, RetrySettings, bounded
from providers.base import ErrorKind, ProviderError


def policy(**kw: float) -> RetryPolicy:
    base = {"attempts": 3, "base_delay_s": 0.001, "max_delay_s": 0.004, "max_retry_after_s": 1.0}
    base.update(kw)
    return RetryPolicy(RetrySettings(**base), rng=random.Random(7))  # type: ignore[arg-type]


class Script:
    """An attempt function that fails with the given errors, then answers "ok"."""

    def __init__(self, *errors: ProviderError) -> None:
        self.errors = list(errors)
        self.calls = 0
        self.timeouts: list[float] = []

    async def __call__(self, timeout_s: float) -> str:
        self.calls += 1
        self.timeouts.append(timeout_s)
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def err(kind: ErrorKind, **kw: object) -> ProviderError:
    return ProviderError(kind, f"simulated {kind.value}", **kw)  # type: ignore[arg-type]


async def test_retryable_errors_are_retried_until_success() -> None:
    script = Script(err(ErrorKind.RETRYABLE), err(ErrorKind.TIMEOUT))
    assert await policy().call(script, Deadline(5)) == "ok"
    assert script.calls == 3


async def test_gives_up_after_the_configured_attempts() -> None:
    script = Script(*(err(ErrorKind.RETRYABLE) for _ in range(5)))
    with pytest.raises(ProviderError) as info:
        await policy(attempts=2).call(script, Deadline(5))
    assert info.value.kind is ErrorKind.RETRYABLE
    assert script.calls == 2


@pytest.mark.parametrize(
    "kind", [ErrorKind.BAD_REQUEST, ErrorKind.CONTENT_FILTERED, ErrorKind.AUTH, ErrorKind.UNAVAILABLE]
)
async def test_final_errors_are_not_retried(kind: ErrorKind) -> None:
    script = Script(err(kind))
    with pytest.raises(ProviderError) as info:
        await policy().call(script, Deadline(5))
    assert info.value.kind is kind
    assert script.calls == 1


def test_backoff_is_full_jitter_under_an_exponential_ceiling() -> None:
    p = RetryPolicy(RetrySettings(base_delay_s=0.1, max_delay_s=0.5), rng=random.Random(1))
    for attempt, ceiling in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.5), (9, 0.5)]:
        samples = [p.backoff(attempt, None) for _ in range(400)]
        assert all(s is not None and 0.0 <= s <= ceiling for s in samples)
        # Full jitter spreads over the whole range, not just near the ceiling.
        assert min(samples) < 0.1 * ceiling  # type: ignore[operator]
        assert max(samples) > 0.9 * ceiling  # type: ignore[operator]


def test_retry_after_is_honoured_and_capped() -> None:
    p = policy(max_retry_after_s=2.0)
    assert p.backoff(1, err(ErrorKind.RATE_LIMITED, retry_after=1.5)) == 1.5
    # Longer than we are willing to wait: do not retry this target at all.
    assert p.backoff(1, err(ErrorKind.RATE_LIMITED, retry_after=30.0)) is None


async def test_retry_after_beyond_the_cap_stops_after_one_attempt() -> None:
    script = Script(err(ErrorKind.RATE_LIMITED, retry_after=60.0))
    with pytest.raises(ProviderError):
        await policy().call(script, Deadline(120))
    assert script.calls == 1


async def test_retry_after_waits_at_least_that_long() -> None:
    loop = asyncio.get_running_loop()
    script = Script(err(ErrorKind.RATE_LIMITED, retry_after=0.2))
    started = loop.time()
    assert await policy().call(script, Deadline(5)) == "ok"
    assert loop.time() - started >= 0.2
    assert script.calls == 2


async def test_never_sleeps_past_the_deadline() -> None:
    # The server asks for 0.5 s but only 0.3 s of budget remain: stop now, keep the error.
    script = Script(err(ErrorKind.RATE_LIMITED, retry_after=0.5))
    with pytest.raises(ProviderError) as info:
        await policy().call(script, Deadline(0.3))
    assert info.value.kind is ErrorKind.RATE_LIMITED
    assert script.calls == 1


async def test_each_attempt_gets_the_remaining_budget_capped() -> None:
    script = Script(err(ErrorKind.RETRYABLE))
    await policy().call(script, Deadline(10), attempt_cap_s=2.0)
    assert script.timeouts[0] == pytest.approx(2.0)
    script = Script(err(ErrorKind.RETRYABLE))
    await policy().call(script, Deadline(0.5), attempt_cap_s=2.0)
    assert all(t <= 0.5 for t in script.timeouts)
    assert script.timeouts[1] < script.timeouts[0]


async def test_observer_sees_every_retry() -> None:
    seen: list[tuple[int, ErrorKind, float]] = []
    script = Script(err(ErrorKind.RETRYABLE), err(ErrorKind.RATE_LIMITED, retry_after=0.01))
    await policy().call(script, Deadline(5), on_retry=lambda n, e, d: seen.append((n, e.kind, d)))
    assert [(n, k) for n, k, _ in seen] == [(1, ErrorKind.RETRYABLE), (2, ErrorKind.RATE_LIMITED)]
    assert seen[1][2] == 0.01


async def test_bounded_turns_a_hang_into_a_timeout_error() -> None:
    async def hang() -> None:
        await asyncio.sleep(30)

    with pytest.raises(ProviderError) as info:
        await bounded(hang, 0.05)
    assert info.value.kind is ErrorKind.TIMEOUT


async def test_a_hanging_attempt_is_retried_within_the_budget() -> None:
    calls = 0

    async def attempt(timeout_s: float) -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            return await bounded(lambda: asyncio.sleep(30), timeout_s)  # type: ignore[return-value]
        return "ok"

    assert await policy().call(attempt, Deadline(5), attempt_cap_s=0.05) == "ok"
    assert calls == 2


async def test_spent_deadline_makes_no_call() -> None:
    script = Script()
    deadline = Deadline(0.0)
    with pytest.raises(ProviderError) as info:
        await policy().call(script, deadline)
    assert info.value.kind is ErrorKind.TIMEOUT
    assert script.calls == 0


async def test_a_deadline_timer_firing_a_millisecond_early_still_counts_as_the_deadline() -> None:
    # uvloop keeps loop time in whole milliseconds, so a timer armed for the deadline may fire
    # just before the monotonic point; the request must then be reported as out of time.
    deadline = Deadline(10)
    assert not deadline.expired
    deadline.expires_at = time.monotonic() + 0.001
    assert deadline.expired
    deadline.expires_at = time.monotonic() + 0.05
    assert not deadline.expired
