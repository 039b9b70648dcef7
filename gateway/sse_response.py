"""The response that writes a chat stream (SSE) straight to ASGI ``send``.

Two costs of Starlette's StreamingResponse are avoided on the hot path:

- Under ASGI < 2.4 (uvicorn) it runs a task group per stream, a disconnect listener beside
  the writer, with anyio cancel scopes. Here one pending ``receive()`` carries a done-callback:
  on ``http.disconnect`` it cancels the writing task, which then ends quietly, as
  StreamingResponse does; the body iterator is closed either way (so the upstream stream is
  released at once).
- It sends every chunk as it is yielded, one socket write each. Here chunks that are ready in
  the same event-loop step (several upstream events in one TCP read) go out together: the
  next chunk is requested by stepping the iterator by hand, and whatever is pending is sent
  just before the iterator would wait. Nothing is held back while waiting for data that has
  not arrived, so no chunk reaches the client later than before.
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import AsyncIterator, Generator
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

#: Pending bytes are sent once they reach this size even if more are ready.
FLUSH_BYTES = 16 * 1024


class LastChunk(bytes):
    """A stream's closing bytes: SSEResponse sends them as the final body message (one send
    fewer per stream); to anything else they are plain bytes."""

    __slots__ = ()


@types.coroutine
def _resume(step: Any, waiting: Any) -> Generator[Any, Any, Any]:
    """Await the rest of ``step``, an awaitable already run by hand up to its first wait
    (``waiting`` is what it handed the event loop): the same delegation as ``await``."""
    yielded = waiting
    while True:
        try:
            value = yield yielded
        except GeneratorExit:
            step.close()
            raise
        except BaseException as exc:  # e.g. the task's cancellation: it belongs to ``step``
            try:
                yielded = step.throw(exc)
            except StopIteration as done:
                return done.value
        else:
            try:
                yielded = step.send(value)
            except StopIteration as done:
                return done.value


class SSEResponse(Response):
    """``text/event-stream`` from an async iterator of bytes (see the module docstring)."""

    media_type = "text/event-stream"

    def __init__(self, content: AsyncIterator[bytes], headers: dict[str, str] | None = None) -> None:
        self.body_iterator = content
        self.status_code = 200
        self.background = None
        self.init_headers(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        assert task is not None
        disconnected = finished = False

        def on_message(done: asyncio.Future) -> None:
            nonlocal disconnected, listener
            if finished or done.cancelled() or done.exception() is not None:
                return
            if done.result()["type"] == "http.disconnect":
                disconnected = True
                task.cancel()
            else:  # an unread request body part: keep listening
                listener = asyncio.ensure_future(receive())
                listener.add_done_callback(on_message)

        listener = asyncio.ensure_future(receive())
        listener.add_done_callback(on_message)
        body = self.body_iterator
        try:
            await send(
                {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
            )
            pending = b""
            last = False
            while not last:
                step = body.__anext__()
                try:
                    waiting = step.send(None)  # runs until the next chunk, or until it must wait
                except StopIteration as ready:
                    chunk = ready.value
                    if len(pending) >= FLUSH_BYTES:  # a producer that never pauses: flush anyway
                        await send({"type": "http.response.body", "body": pending, "more_body": True})
                        pending = b""
                except StopAsyncIteration:
                    break
                else:
                    if pending:  # about to wait: what is ready goes out first
                        await send({"type": "http.response.body", "body": pending, "more_body": True})
                        pending = b""
                    try:
                        chunk = await _resume(step, waiting)
                    except StopAsyncIteration:
                        break
                last = type(chunk) is LastChunk
                pending += chunk
            finished = True
            await send({"type": "http.response.body", "body": pending, "more_body": False})
            if last:
                async for _ in body:  # the iterator's work after its last chunk (billing, cache)
                    pass
        except asyncio.CancelledError:
            if not disconnected or task.uncancel() > 0:
                raise  # not (only) the client leaving: e.g. server shutdown
        finally:
            finished = True
            listener.remove_done_callback(on_message)
            listener.cancel()
            aclose = getattr(body, "aclose", None)
            if aclose is not None:
                await aclose()
