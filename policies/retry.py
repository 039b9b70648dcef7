"""Retries inside a deadline: exponential backoff with full jitter, Retry-After honoured.

Why a deadline and not just an attempt count: a digital human's caller waits in real time,
so every retry must fit in the request's whole budget, and whatever is left must still be
usable by the next target in the fallback chain. The policy therefore stops as soon as the
next sleep would cross the deadline, and each attempt gets at most the remaining budget.

Only kinds in ``RETRYABLE_KINDS`` are retried. A Retry-After longer than
``max_retry_after_s`` is not waited out at all: the target gives up so the chain can move
on, instead of sleeping on a target that has told us it will not serve us soon.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

from providers.base import RETRYABLE_KINDS, ErrorKind, ProviderError

T = TypeVar("T")

#: Called before each retry sleep: (attempt number that failed, the error, the sleep in seconds).
RetryObserver = Callable[[int, ProviderError, float], None]


#: Time left that already counts as a spent deadline (event-loop timer granularity).
CLOCK_SLACK_S = 0.002


class Deadline:
    """A point on the monotonic clock by which the whole request must be answered."""

    __slots__ = ("budget_s", "expires_at")

    def __init__(self, budget_s: float) -> None:
        self.budget_s = budget_s
        self.expires_at = time.monotonic() + budget_s

    def remaining(self) -> float:
        return max(0.0, self.expires_at - time.monotonic())

    @property
    def expired(self) -> bool:
        # A timer armed for the deadline can fire up to a millisecond early (uvloop keeps loop
        # time in whole milliseconds): an attempt cut off by it must still count as the deadline.
        return self.remaining() <= CLOCK_SLACK_S


@dataclass(frozen=True, slots=True)
class RetrySettings:
    """The knobs of ``settings.retry`` (kept separate so the policy is testable without Settings)."""

    attempts: int = 3
    base_delay_s: float = 0.2
    max_delay_s: float = 4.0
    max_retry_after_s: float = 10.0

    @classmethod
    def from_config(cls, config: object) -> RetrySettings:
        return cls(
            attempts=int(getattr(config, "attempts", cls.attempts)),
            base_delay_s=float(getattr(config, "base_delay_s", cls.base_delay_s)),
            max_delay_s=float(getattr(config, "max_delay_s", cls.max_delay_s)),
            max_retry_after_s=float(getattr(config, "max_retry_after_s", cls.max_retry_after_s)),
        )


def _is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, ProviderError) and exc.kind in RETRYABLE_KINDS


class RetryPolicy:
    """Runs an attempt function until it succeeds, the error is final, or the budget is spent."""

    def __init__(self, settings: RetrySettings, *, rng: random.Random | None = None) -> None:
        self.settings = settings
        self._rng = rng or random.Random()

    def backoff(self, failed_attempt: int, error: ProviderError | None) -> float | None:
        """Seconds to sleep after ``failed_attempt`` (1-based); None means "do not retry"."""
        s = self.settings
        if error is not None and error.retry_after is not None:
            if error.retry_after > s.max_retry_after_s:
                return None
            return max(0.0, error.retry_after)
        ceiling = min(s.max_delay_s, s.base_delay_s * (2 ** (failed_attempt - 1)))
        return self._rng.uniform(0.0, ceiling)  # full jitter

    def attempt_timeout(self, deadline: Deadline, cap_s: float | None = None) -> float:
        """The time the next attempt may take: the remaining budget, at most ``cap_s``."""
        timeout = deadline.remaining()
        return timeout if cap_s is None else min(timeout, cap_s)

    async def call(
        self,
        attempt: Callable[[float], Awaitable[T]],
        deadline: Deadline,
        *,
        attempt_cap_s: float | None = None,
        on_retry: RetryObserver | None = None,
    ) -> T:
        """Call ``attempt(timeout_s)`` with retries.

        ``timeout_s`` is what is left of the budget (at most ``attempt_cap_s``); the attempt must
        finish within it, usually by wrapping its upstream call in ``bounded``. The attempt owns
        the timeout (rather than this loop) so it can still record the outcome, e.g. in a
        circuit breaker, after its upstream call was cut off.
        """
        # Fast path: the first attempt runs without tenacity. Its machinery (AsyncRetrying,
        # RetryCallState, closures, a Future with a lock) is ~45 objects in reference cycles per
        # call, which only the cyclic GC frees; under load those cycles drove 100-200 ms gen-2
        # pauses. A retryable failure hands over to tenacity, which replays it as attempt 1, so
        # waits, stops and observers see exactly what they would have seen.
        timeout = self.attempt_timeout(deadline, attempt_cap_s)
        if timeout <= 0:
            first_error: ProviderError = ProviderError(
                ErrorKind.TIMEOUT, "the request deadline was spent before this attempt"
            )
        else:
            try:
                return await attempt(timeout)
            except ProviderError as exc:
                if not _is_retryable(exc):
                    raise
                first_error = exc
        return await self._retry_after_first(first_error, attempt, deadline, attempt_cap_s, on_retry)

    async def _retry_after_first(
        self,
        first_error: ProviderError,
        attempt: Callable[[float], Awaitable[T]],
        deadline: Deadline,
        attempt_cap_s: float | None,
        on_retry: RetryObserver | None,
    ) -> T:
        """Attempts 2..n under tenacity; attempt 1 (already made) re-raises its error."""
        settings = self.settings
        replay: ProviderError | None = first_error

        def wait(state: RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome else None
            delay = self.backoff(state.attempt_number, error if isinstance(error, ProviderError) else None)
            return -1.0 if delay is None else delay

        def stop(state: RetryCallState) -> bool:
            sleep = state.upcoming_sleep
            if sleep < 0 or state.attempt_number >= settings.attempts:
                return True
            # Not worth sleeping if nothing of the budget would be left for the next attempt.
            return sleep >= deadline.remaining()

        def before_sleep(state: RetryCallState) -> None:
            if on_retry is not None and state.outcome is not None:
                error = state.outcome.exception()
                if isinstance(error, ProviderError):
                    on_retry(state.attempt_number, error, state.upcoming_sleep)

        retrying = AsyncRetrying(
            retry=retry_if_exception(_is_retryable),
            wait=wait,
            stop=stop,
            before_sleep=before_sleep,
            reraise=True,
        )
        async for state in retrying:
            with state:
                if replay is not None:
                    error, replay = replay, None
                    raise error
                timeout = self.attempt_timeout(deadline, attempt_cap_s)
                if timeout <= 0:
                    raise ProviderError(
                        ErrorKind.TIMEOUT, "the request deadline was spent before this attempt"
                    )
                return await attempt(timeout)
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover


async def bounded(call: Callable[[], Awaitable[T]], timeout_s: float) -> T:
    """Run ``call()`` for at most ``timeout_s``; running out becomes a TIMEOUT ProviderError."""
    try:
        async with asyncio.timeout(timeout_s):
            return await call()
    except TimeoutError as exc:
        raise ProviderError(ErrorKind.TIMEOUT, f"no answer within {timeout_s:.2f}s") from exc
