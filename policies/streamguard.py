"""What happens to a stream after its first chunk has been handed to the caller.

Before the first chunk the router may still fail over; after it, the caller has started
answering (SSE bytes, audio played), so a failure must surface as ``StreamInterrupted``
and end the stream with an explicit error, never as a clean close or a silent hang.
Also here: the small helpers the router shares with it (error wording, closing streams).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from providers.base import ErrorKind, ProviderError

log = logging.getLogger("talkgate.routing")
T = TypeVar("T")


class StreamInterrupted(Exception):
    """A stream failed after its first byte reached the client: no failover is allowed any more."""

    def __init__(self, cause: ProviderError) -> None:
        super().__init__(cause.message)
        self.cause = cause


def describe_error(exc: ProviderError) -> str:
    """One short line for logs and the "what was tried" message: kind, code, message."""
    code = f" {exc.code}" if exc.code and exc.code not in exc.message else ""
    message = exc.message if len(exc.message) <= 160 else exc.message[:157] + "..."
    return f"{exc.kind.value}{code}: {message}"


async def classify_bugs(target: str, awaitable: Awaitable[T]) -> T:
    """A provider bug must not escape as a 500: classify it, and keep it out of retries."""
    try:
        return await awaitable
    except (ProviderError, asyncio.CancelledError, TimeoutError):
        raise
    except Exception as exc:
        log.exception("provider %s raised an unclassified error", target)
        raise ProviderError(
            ErrorKind.UNAVAILABLE, f"internal error in {target}: {type(exc).__name__}", provider=target
        ) from exc


async def close_quietly(iterator: Any) -> None:
    """Release an upstream stream we no longer read (its connection, its worker thread)."""
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except Exception:
            log.debug("closing an abandoned upstream stream failed", exc_info=True)


class StallWatch:
    """The stall timeout of one stream, armed with one event-loop timer per stream instead of
    one ``asyncio.timeout`` per chunk (each arms and disarms a timer: under uvloop that was a
    fifth of a streamed request's event-loop time). Each wait records its deadline; when the
    timer fires it either finds the current wait past its deadline and cancels the waiting task,
    or re-arms itself for the deadline in force (or not at all between waits)."""

    __slots__ = ("_deadline", "_handle", "_loop", "_stall_s", "_task", "fired")

    def __init__(self, stall_s: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._stall_s = stall_s
        self._deadline = 0.0
        self._task: asyncio.Task | None = None  # the task waiting now, None between waits
        self._handle: asyncio.TimerHandle | None = None
        self.fired = False

    def waiting(self) -> None:
        """Call before each wait for the next chunk."""
        self._task = asyncio.current_task()
        self._deadline = self._loop.time() + self._stall_s
        if self._handle is None:
            self._handle = self._loop.call_at(self._deadline, self._check)

    def done_waiting(self) -> None:
        self._task = None

    def stalled(self) -> bool:
        """After a CancelledError in the wait: True if it was this watch's (and only its) doing."""
        return self.fired and self._task is not None and self._task.uncancel() == 0

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _check(self) -> None:
        self._handle = None
        if self._task is None:
            return  # between waits: the next wait re-arms
        if self._loop.time() >= self._deadline:
            self.fired = True
            self._task.cancel()
        else:
            self._handle = self._loop.call_at(self._deadline, self._check)


async def guarded_stream(
    first: Any,
    rest: AsyncIterator,
    *,
    target: str,
    stall_s: float,
    on_break: Callable[[ProviderError], Awaitable[None]],
) -> AsyncIterator:
    """Yield ``first``, then ``rest``; any failure after ``first`` becomes StreamInterrupted.

    A gap longer than ``stall_s`` between two chunks is a failure too: a stream that stops
    mid-sentence must end with an explicit error, never hang the client. ``on_break`` lets
    the router count the break (metrics, circuit breaker) before the caller sees it.
    """
    yield first
    watch = StallWatch(stall_s)
    try:
        while True:
            watch.waiting()
            try:
                item = await rest.__anext__()
            except StopAsyncIteration:
                return
            except asyncio.CancelledError:
                if watch.stalled():
                    raise ProviderError(ErrorKind.TIMEOUT, f"no answer within {stall_s:.2f}s") from None
                raise
            except ProviderError:
                raise
            except Exception as exc:
                log.exception("stream from %s raised an unclassified error", target)
                raise ProviderError(
                    ErrorKind.RETRYABLE, f"{type(exc).__name__} in the upstream stream"
                ) from exc
            finally:
                watch.done_waiting()
            yield item
    except ProviderError as exc:
        exc.provider = exc.provider or target
        log.warning("stream from %s broke after its first chunk: %s", target, describe_error(exc))
        await on_break(exc)
        raise StreamInterrupted(exc) from exc
    finally:
        watch.close()
        await close_quietly(rest)
