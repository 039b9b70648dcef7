"""A keep-alive HTTP/1.1 client for the one call on the hot path: a JSON POST and its whole reply.

Why not aiohttp here: ``ClientSession.post`` costs about 80 µs of event-loop CPU per call on our
2-core VM (URL building, cookie jar, payload registry, tracing hooks, timer handles), twice what
the socket work itself costs (``bench/RESULTS.md``). For a plain chat request that was a quarter
of the gateway's whole CPU time. This client does only what that call needs: a pooled
connection per origin, one write of prebuilt headers plus the body, httptools (the parser
uvicorn uses) for the reply, a deadline, and a retry on a fresh connection when a reused one
turns out to have been closed by the server before it answered. Streams (SSE), WebSockets and
downloads stay on aiohttp.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import zlib
from collections import deque
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools

#: A reply larger than this is refused (guards memory; DashScope JSON replies are small).
MAX_REPLY_BYTES = 64 * 1024 * 1024


class ConnectError(OSError):
    """The origin could not be reached (refused, DNS, TLS handshake): nothing was sent."""


class ConnectionDropped(ConnectionError):
    """The connection closed (or sent garbage) before the whole reply arrived."""

    def __init__(self, message: str, *, replied: bool) -> None:
        super().__init__(message)
        #: False when not a byte of the reply had arrived: a reused connection the server had
        #: already closed, where sending again on a fresh one is safe.
        self.replied = replied


@dataclass(slots=True)
class Reply:
    status: int
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes


class _Connection(asyncio.Protocol):
    """One socket; at most one exchange at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Reply] | None = None
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._size = 0
        self._replied = False
        self._framed = False  # Content-Length or chunked: the end is known without EOF
        self._headers_done = False
        self.reusable = False

    # --- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._replied = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionDropped(f"malformed HTTP reply: {exc}", replied=True))

    def connection_lost(self, exc: Exception | None) -> None:
        self.reusable = False
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self._parser.get_status_code() and not self._framed and self._headers_done:
            self._complete()  # a reply delimited by the end of the connection
            return
        reason = f": {exc}" if exc else ""
        dropped = ConnectionDropped(
            f"connection closed before the reply ended{reason}", replied=self._replied
        )
        waiter.set_exception(dropped)

    # --- httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        self._headers[key] = f"{self._headers[key]}, {text}" if key in self._headers else text

    def on_headers_complete(self) -> None:
        self._headers_done = True
        self._framed = "content-length" in self._headers or "chunked" in self._headers.get(
            "transfer-encoding", ""
        )

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > MAX_REPLY_BYTES:
            self._fail(ConnectionDropped(f"reply larger than {MAX_REPLY_BYTES} bytes", replied=True))
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        self.reusable = self._framed and self._parser.should_keep_alive()
        self._complete()

    # --- exchange
    def _complete(self) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        body = b"".join(self._body)
        encoding = self._headers.get("content-encoding", "")
        if encoding in ("gzip", "deflate"):
            try:
                body = zlib.decompress(body, 47 if encoding == "gzip" else zlib.MAX_WBITS)
            except zlib.error as exc:
                waiter.set_exception(ConnectionDropped(f"bad {encoding} body: {exc}", replied=True))
                return
        waiter.set_result(Reply(self._parser.get_status_code(), self._headers, body))

    def _fail(self, exc: Exception) -> None:
        self.reusable = False
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)
        if self.transport is not None:
            self.transport.close()

    def send(self, data: bytes) -> asyncio.Future[Reply]:
        """Write one request; the future resolves with its reply."""
        assert self.transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self._headers, self._body, self._size = {}, [], 0
        self._replied = self._framed = self._headers_done = self.reusable = False
        self.transport.write(data)
        return self._waiter

    @property
    def open(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class Http1Pool:
    """Keep-alive connections to one origin (``http://`` or ``https://``), for JSON POSTs.

    ``limit`` bounds the open connections (callers beyond it wait); an idle connection older
    than ``idle_s`` is closed instead of reused, so the server's own keep-alive timeout is
    rarely met mid-request, and when it is, the request is sent again on a fresh connection.
    """

    def __init__(self, base_url: str, *, limit: int = 512, idle_s: float = 30.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.host = parts.hostname
        self.tls = parts.scheme == "https"
        self.port = parts.port or (443 if self.tls else 80)
        default_port = self.port == (443 if self.tls else 80)
        self.host_header = self.host if default_port else f"{self.host}:{self.port}"
        self.prefix = parts.path.rstrip("/")
        self.idle_s = idle_s
        self._limit = asyncio.Semaphore(limit)
        self._idle: deque[_Connection] = deque()
        self._ssl: ssl.SSLContext | None = ssl.create_default_context() if self.tls else None
        self.closed = False

    def request_head(self, path: str, headers: dict[str, str]) -> bytes:
        """The start line and fixed headers of a POST to ``path`` (Content-Length is added per call)."""
        lines = [f"POST {self.prefix}/{path.lstrip('/')} HTTP/1.1", f"Host: {self.host_header}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        return ("\r\n".join(lines) + "\r\n").encode("latin-1")

    async def post(self, head: bytes, body: bytes, timeout_s: float) -> Reply:
        """Send ``head`` (from ``request_head``) with ``body``; the whole reply within ``timeout_s``."""
        if self.closed:
            raise ConnectError("the HTTP pool is closed")
        data = b"%sContent-Length: %d\r\n\r\n%s" % (head, len(body), body)
        async with asyncio.timeout(timeout_s), self._limit:
            conn, reused = await self._acquire()
            try:
                reply = await conn.send(data)
            except ConnectionDropped as exc:
                conn.close()
                if not (reused and not exc.replied):
                    raise
                conn, reused = await self._connect(), False  # the server had closed it while idle
                try:
                    reply = await conn.send(data)
                except BaseException:
                    conn.close()
                    raise
            except BaseException:  # timeout, cancellation: the exchange's state is unknown
                conn.close()
                raise
            self._release(conn)
            return reply

    async def _acquire(self) -> tuple[_Connection, bool]:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()  # the most recently used: the least likely to be stale
            if conn.open and now - conn.idle_since < self.idle_s:
                return conn, True
            conn.close()
        return await self._connect(), False

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(
                _Connection,
                self.host,
                self.port,
                ssl=self._ssl,
                server_hostname=self.host if self.tls else None,
            )
        except (OSError, ssl.SSLError) as exc:
            raise ConnectError(f"cannot connect to {self.host_header}: {exc}") from exc
        return conn

    def _release(self, conn: _Connection) -> None:
        if conn.reusable and conn.open and not self.closed:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            conn.close()

    async def close(self) -> None:
        self.closed = True
        while self._idle:
            self._idle.pop().close()
