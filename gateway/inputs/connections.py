"""Connections that never finish their request headers are closed, and there can only be so many.

Why: uvicorn arms no timer until a first response has been sent, so a client that opens
connections and sends headers a byte at a time (slowloris) keeps them, and the sockets and
memory they hold, for as long as it likes. ``guarded_http_protocol`` returns uvicorn's
httptools protocol with two additions:

- a header timer, armed when a connection opens and when a new request on a kept-alive
  connection begins, cancelled when the headers are complete: past ``header_timeout_s`` the
  client gets ``408`` and the connection is closed;
- a cap on connections waiting for their headers (``max_waiting``): past it a new connection
  is closed at once, so an attacker cannot exhaust file descriptors with half-open requests.

Bodies are guarded separately, per read, by ``gateway/inputs/body.py``.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_TIMEOUT_BODY = (
    b'{"error":{"message":"The request headers did not arrive in time.",'
    b'"type":"invalid_request_error","param":null,"code":"request_timeout"}}'
)
TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
    b"content-length: " + str(len(_TIMEOUT_BODY)).encode() + b"\r\n\r\n" + _TIMEOUT_BODY
)


class GuardedHttpProtocol(HttpToolsProtocol):
    """See the module docstring; configured by ``guarded_http_protocol``."""

    header_timeout_s: ClassVar[float] = 10.0
    max_waiting: ClassVar[int] = 1024
    #: connections of this class whose current request has no complete headers yet
    waiting: ClassVar[set[GuardedHttpProtocol]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.waiting) >= self.max_waiting:
            transport.close()  # too many half-open requests: refuse this one outright
            return
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._header_timer is None:  # a new request on a kept-alive connection
            self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_overdue)
        self.waiting.add(self)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        self.waiting.discard(self)

    def _headers_overdue(self) -> None:
        self._header_timer = None
        self.waiting.discard(self)
        if not self.transport.is_closing():
            self.transport.write(TIMEOUT_RESPONSE)
            self.transport.close()


def guarded_http_protocol(header_timeout_s: float, max_waiting: int) -> type[GuardedHttpProtocol]:
    """A protocol class for ``uvicorn.run(http=...)`` with these limits (one set per server)."""
    return type(
        "GuardedHttpProtocol",
        (GuardedHttpProtocol,),
        {"header_timeout_s": header_timeout_s, "max_waiting": max_waiting, "waiting": set()},
    )
