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

from policies.retry import bounded
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
    try:
        while True:
            try:
                item = await bounded(rest.__anext__, stall_s)
            except StopAsyncIteration:
                return
            except (ProviderError, asyncio.CancelledError):
                raise
            except Exception as exc:
                log.exception("stream from %s raised an unclassified error", target)
                raise ProviderError(
                    ErrorKind.RETRYABLE, f"{type(exc).__name__} in the upstream stream"
                ) from exc
            yield item
    except ProviderError as exc:
        exc.provider = exc.provider or target
        log.warning("stream from %s broke after its first chunk: %s", target, describe_error(exc))
        await on_break(exc)
        raise StreamInterrupted(exc) from exc
    finally:
        await close_quietly(rest)
