"""In-flight call counting around a provider instance.

Split from ``gateway.hotswap``: a swap drains the outgoing instance by waiting until this wrapper
counts zero calls in flight, and ``/metrics`` exports the same counts per provider instance.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any


class TrackedProvider:
    """Counts calls in flight on one provider instance, so a swap can wait for them to finish.

    Everything else is forwarded to the wrapped instance; it costs one counter update per call.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def __getattr__(self, item: str) -> Any:
        return getattr(self.inner, item)

    def _enter(self) -> None:
        self.inflight += 1
        self._idle.clear()

    def _exit(self) -> None:
        self.inflight -= 1
        if self.inflight <= 0:
            self.inflight = 0
            self._idle.set()

    async def _call(self, method: str, request: Any) -> Any:
        self._enter()
        try:
            return await getattr(self.inner, method)(request)
        finally:
            self._exit()

    async def _stream(self, method: str, request: Any, *args: Any) -> AsyncIterator[Any]:
        stream = getattr(self.inner, method)(request, *args)
        self._enter()
        try:
            async for item in stream:
                yield item
        finally:
            try:
                aclose = getattr(stream, "aclose", None)
                if aclose is not None:  # an abandoned stream releases its upstream connection now
                    await aclose()
            finally:
                self._exit()

    async def chat(self, request: Any) -> Any:
        return await self._call("chat", request)

    async def transcribe(self, request: Any) -> Any:
        return await self._call("transcribe", request)

    async def synthesize(self, request: Any) -> Any:
        return await self._call("synthesize", request)

    def chat_stream(self, request: Any) -> AsyncIterator[Any]:
        return self._stream("chat_stream", request)

    def synthesize_stream(self, request: Any) -> AsyncIterator[Any]:
        return self._stream("synthesize_stream", request)

    def transcribe_stream(self, request: Any, audio: AsyncIterator[bytes]) -> AsyncIterator[Any]:
        # Whether a model streams is the inner provider's answer (``streams_transcription``,
        # forwarded by __getattr__); the router asks it before calling this.
        return self._stream("transcribe_stream", request, audio)

    async def drained(self, timeout_s: float) -> bool:
        """True once nothing is in flight; False if ``timeout_s`` passed first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True


def tracked(provider: Any) -> TrackedProvider:
    """``provider`` wrapped once: wrapping a wrapper would count its calls twice."""
    return provider if isinstance(provider, TrackedProvider) else TrackedProvider(provider)
