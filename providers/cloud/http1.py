"""A keep-alive HTTP/1.1 client for the calls on the hot path: a JSON POST, answered whole or streamed.

Why not aiohttp here: on our 2-core VM a bare ``ClientSession.post`` costs 87 µs of client CPU
per plain call and 146 µs per SSE stream; this pool costs 53 and 108 µs, both including the
same socket work (``bench/cloud_providers.py``). Inside the loaded gateway the gain was larger:
its CPU per plain chat request fell from about 305 to 212 µs when post_json moved here
(``bench/RESULTS.md``). Under load, that CPU time is what requests queue behind on the one
event loop.

This client does only what those calls need: a pooled connection per origin, one write of
prebuilt headers plus the body, httptools (the parser uvicorn uses) for the reply, a deadline,
and a retry on a fresh connection when a reused one turns out to have been closed by the server
before it answered. A streamed reply (SSE) is handed over chunk by chunk as it arrives, with an
idle-read timeout and back-pressure. WebSockets and downloads stay on aiohttp.

Through an egress proxy (``proxy=``, chosen by ``providers/cloud/proxy.py``): an ``https://``
origin is reached through a CONNECT tunnel (TLS end to end, the proxy sees only the host); an
``http://`` origin gets its requests in absolute form (``POST http://host/path``) on a connection to
the proxy. Either way the connection is then pooled and reused like a direct one.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
import zlib
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools

from providers.cloud.proxy import proxy_address

#: A proxy's answer to CONNECT larger than this (headers only) is refused.
MAX_CONNECT_REPLY_BYTES = 16 * 1024
#: A reply larger than this is refused (guards memory; DashScope JSON replies are small).
MAX_REPLY_BYTES = 64 * 1024 * 1024
#: A streamed reply stops reading from the socket while this much is waiting for its consumer.
STREAM_HIGH_WATER = 1024 * 1024
#: A stream closed before its end keeps its connection this long for the rest of the reply, so
#: the connection can be reused. The usual case: the reader stopped at the last SSE event and
#: only the chunked terminator is still in flight (it comes within a millisecond). Short on
#: purpose: a stream abandoned mid-answer (the client went away) is closed after this, and
#: closing the connection is what tells the upstream to stop generating billed tokens.
STREAM_DRAIN_S = 0.25


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
    """One socket; at most one exchange at a time.

    A whole reply resolves the send() future at its end. A streamed one resolves it when the
    headers are in; the body is then read with next_chunk().
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.idle_since = 0.0
        self.reusable = False
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Reply] | None = None
        self._reset(stream=False)

    def _reset(self, *, stream: bool) -> None:
        self._stream = stream
        self._headers: dict[str, str] = {}
        self._body: deque[bytes] = deque()
        self._size = 0  # bytes received (whole reply) or buffered (stream)
        self._replied = False
        self._framed = False  # Content-Length or chunked: the end is known without EOF
        self._headers_done = False
        self._ended = False
        self._error: Exception | None = None
        self._more: asyncio.Future[None] | None = None  # a stream's consumer waiting for data
        self._paused = False
        self._on_end: Callable[[], None] | None = None  # set while draining a closed stream
        self._drain_timer: asyncio.TimerHandle | None = None
        self._idle_timer: asyncio.TimerHandle | None = None  # a stream's idle-read timeout
        self._read_deadline = 0.0
        self._idle_s = 0.0
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
        if self._ended:
            return
        if self._headers_done and not self._framed:
            self.on_message_complete()  # a reply delimited by the end of the connection
            return
        reason = f": {exc}" if exc else ""
        self._fail(
            ConnectionDropped(f"connection closed before the reply ended{reason}", replied=self._replied)
        )

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
        if self._stream and self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(Reply(self._parser.get_status_code(), self._headers, b""))

    def on_body(self, body: bytes) -> None:
        if self._on_end is not None:
            return  # draining: nobody reads this any more
        self._size += len(body)
        self._body.append(body)
        if not self._stream:
            if self._size > MAX_REPLY_BYTES:
                self._fail(ConnectionDropped(f"reply larger than {MAX_REPLY_BYTES} bytes", replied=True))
            return
        self._wake()
        if self._size > STREAM_HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def on_message_complete(self) -> None:
        if self._ended:
            return
        self._ended = True
        self.reusable = self._framed and self._parser.should_keep_alive()
        if self._stream:
            self._stop_idle_timer()
            self._wake()
            self._drained()
            return
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        body = b"".join(self._body)
        encoding = self._headers.get("content-encoding", "")
        if encoding in ("gzip", "deflate"):
            try:
                body = zlib.decompress(body, 47 if encoding == "gzip" else zlib.MAX_WBITS)
            except zlib.error as exc:
                self.reusable = False
                waiter.set_exception(ConnectionDropped(f"bad {encoding} body: {exc}", replied=True))
                return
        waiter.set_result(Reply(self._parser.get_status_code(), self._headers, body))

    # --- exchange
    def _wake(self) -> None:
        if self._more is not None and not self._more.done():
            self._more.set_result(None)

    def _fail(self, exc: Exception) -> None:
        self.reusable = False
        self._stop_idle_timer()
        if not self._ended:
            self._ended = True
            self._error = exc
            if self._waiter is not None and not self._waiter.done():
                self._waiter.set_exception(exc)
            self._wake()
            self._drained()
        if self.transport is not None:
            self.transport.close()

    def finish_in_background(self, on_end: Callable[[], None], within_s: float) -> None:
        """Discard the rest of a streamed body; ``on_end()`` once the reply has ended (the
        connection is then reusable) or the connection has closed, after ``within_s`` at most."""
        self._body.clear()
        self._size = 0
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        if self._ended:
            on_end()
            return
        self._on_end = on_end
        self._drain_timer = asyncio.get_running_loop().call_later(within_s, self.close)

    def _stop_idle_timer(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _check_idle(self) -> None:
        self._idle_timer = None
        if self._more is None or self._ended:
            return  # not waiting now: the next wait re-arms
        loop = asyncio.get_running_loop()
        if loop.time() >= self._read_deadline:
            self._fail(TimeoutError(f"no data from the server for {self._idle_s:.1f}s"))
        else:
            self._idle_timer = loop.call_at(self._read_deadline, self._check_idle)

    def _drained(self) -> None:
        on_end, self._on_end = self._on_end, None
        if self._drain_timer is not None:
            self._drain_timer.cancel()
            self._drain_timer = None
        if on_end is not None:
            on_end()

    def send(self, data: bytes, *, stream: bool = False) -> asyncio.Future[Reply]:
        """Write one request; the future resolves with its reply (a stream's: at the headers)."""
        if not self.open:  # closed by the server between connect (or reuse) and now
            raise ConnectionDropped("connection closed before the request was sent", replied=False)
        assert self.transport is not None
        self._reset(stream=stream)
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self._waiter

    async def next_chunk(self, idle_s: float) -> bytes:
        """The next piece of a streamed body as it arrived; ``b""`` at its end."""
        while not self._body:
            if self._error is not None:
                raise self._error
            if self._ended:
                return b""
            loop = asyncio.get_running_loop()
            self._more = loop.create_future()
            # One timer per stream, re-armed lazily (an asyncio.timeout per wait arms and
            # disarms a timer per SSE event).
            self._idle_s = idle_s
            self._read_deadline = loop.time() + idle_s
            if self._idle_timer is None:
                self._idle_timer = loop.call_at(self._read_deadline, self._check_idle)
            try:
                await self._more
            finally:
                self._more = None
        chunk = self._body.popleft()
        self._size -= len(chunk)
        if self._paused and self._size <= STREAM_HIGH_WATER // 4 and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return chunk

    @property
    def open(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.close()


class Stream:
    """A streamed reply: ``status`` and ``headers`` now, the body from ``chunks()``.

    The connection goes back to the pool once the body has been read to its end. ``close()``
    (always call it, e.g. in ``finally``) handles a reader that stopped early: the rest of the
    reply may still arrive within ``STREAM_DRAIN_S`` (then the connection is reused), else the
    connection is closed. The body is passed on as sent: no content decoding (the client does
    not ask for any).
    """

    def __init__(self, pool: Http1Pool, conn: _Connection, reply: Reply, idle_s: float) -> None:
        self.status = reply.status
        self.headers = reply.headers
        self._pool = pool
        self._conn: _Connection | None = conn
        self._idle_s = idle_s
        self._finished = False

    async def chunks(self) -> AsyncIterator[bytes]:
        conn = self._conn
        if conn is None:
            return
        while chunk := await conn.next_chunk(self._idle_s):
            yield chunk
        self._finished = True
        self.close()

    async def read(self, limit: int = MAX_REPLY_BYTES) -> bytes:
        """The rest of the body (e.g. an error reply), at most ``limit`` bytes."""
        parts: list[bytes] = []
        size = 0
        async for chunk in self.chunks():
            size += len(chunk)
            if size > limit:
                self.close()
                raise ConnectionDropped(f"reply larger than {limit} bytes", replied=True)
            parts.append(chunk)
        return b"".join(parts)

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._finished or not conn.open:
            self._done(conn)
        else:  # the reader stopped early: let the rest of the reply arrive, then reuse or drop
            conn.finish_in_background(lambda: self._done(conn), STREAM_DRAIN_S)

    def _done(self, conn: _Connection) -> None:
        self._pool._release(conn)
        self._pool._limit.release()


class Http1Pool:
    """Keep-alive connections to one origin (``http://`` or ``https://``), for JSON POSTs.

    ``limit`` bounds the open connections (callers beyond it wait); an idle connection older
    than ``idle_s`` is closed instead of reused, so the server's own keep-alive timeout is
    rarely met mid-request, and when it is, the request is sent again on a fresh connection.
    """

    def __init__(
        self,
        base_url: str,
        *,
        limit: int = 512,
        idle_s: float = 30.0,
        proxy: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
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
        self._ssl: ssl.SSLContext | None = (ssl_context or ssl.create_default_context()) if self.tls else None
        self.closed = False
        self.proxy: tuple[str, int, dict[str, str]] | None = proxy_address(proxy) if proxy else None

    def request_head(self, path: str, headers: dict[str, str]) -> bytes:
        """The start line and fixed headers of a POST to ``path`` (Content-Length is added per call)."""
        target = f"{self.prefix}/{path.lstrip('/')}"
        extra: dict[str, str] = {}
        if self.proxy is not None and not self.tls:  # a plain-http origin through the proxy
            target = f"http://{self.host_header}{target}"
            extra = self.proxy[2]
        lines = [f"POST {target} HTTP/1.1", f"Host: {self.host_header}"]
        lines += [f"{name}: {value}" for name, value in {**headers, **extra}.items()]
        return ("\r\n".join(lines) + "\r\n").encode("latin-1")

    async def post(self, head: bytes, body: bytes, timeout_s: float) -> Reply:
        """Send ``head`` (from ``request_head``) with ``body``; the whole reply within ``timeout_s``."""
        async with asyncio.timeout(timeout_s), self._limit:
            conn, reply = await self._exchange(head, body, stream=False)
            self._release(conn)
            return reply

    async def stream(self, head: bytes, body: bytes, timeout_s: float) -> Stream:
        """Send the request; returns at the reply's headers (within ``timeout_s``). The body then
        arrives through ``Stream.chunks()``, each wait for data also bounded by ``timeout_s``."""
        await self._limit.acquire()
        try:
            async with asyncio.timeout(timeout_s):
                conn, reply = await self._exchange(head, body, stream=True)
        except BaseException:
            self._limit.release()
            raise
        return Stream(self, conn, reply, timeout_s)

    async def _exchange(self, head: bytes, body: bytes, *, stream: bool) -> tuple[_Connection, Reply]:
        if self.closed:
            raise ConnectError("the HTTP pool is closed")
        data = b"%sContent-Length: %d\r\n\r\n%s" % (head, len(body), body)
        conn, reused = await self._acquire()
        try:
            return conn, await conn.send(data, stream=stream)
        except ConnectionDropped as exc:
            conn.close()
            if not reused or exc.replied:
                raise
        except BaseException:  # timeout, cancellation: the exchange's state is unknown
            conn.close()
            raise
        conn = await self._connect()  # the server had closed the idle connection: send again
        try:
            return conn, await conn.send(data, stream=stream)
        except BaseException:
            conn.close()
            raise

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
            if self.proxy is None:
                _, conn = await loop.create_connection(
                    _Connection,
                    self.host,
                    self.port,
                    ssl=self._ssl,
                    server_hostname=self.host if self.tls else None,
                )
            elif not self.tls:
                _, conn = await loop.create_connection(_Connection, self.proxy[0], self.proxy[1])
            else:
                sock = await self._tunnel()
                try:
                    _, conn = await loop.create_connection(
                        _Connection, sock=sock, ssl=self._ssl, server_hostname=self.host
                    )
                except BaseException:
                    sock.close()
                    raise
        except (OSError, ssl.SSLError) as exc:
            raise ConnectError(f"cannot connect to {self.host_header}: {exc}") from exc
        return conn

    async def _tunnel(self) -> socket.socket:
        """A socket to the proxy on which ``CONNECT host:port`` succeeded (raises ConnectError)."""
        assert self.proxy is not None
        host, port, headers = self.proxy
        loop = asyncio.get_running_loop()
        family, kind, proto, _, address = (await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM))[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, address)
            authority = f"{self.host}:{self.port}" if ":" not in self.host else f"[{self.host}]:{self.port}"
            lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
            lines += [f"{name}: {value}" for name, value in headers.items()]
            await loop.sock_sendall(sock, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            head = b""
            while b"\r\n\r\n" not in head:  # the proxy says nothing more before our TLS hello
                chunk = await loop.sock_recv(sock, 4096)
                if not chunk or len(head) > MAX_CONNECT_REPLY_BYTES:
                    raise ConnectError(f"the proxy ended the CONNECT to {self.host_header}")
                head += chunk
            status = head.split(b"\r\n", 1)[0].split(b" ")
            if len(status) < 2 or status[1] != b"200":
                reason = b" ".join(status[1:]).decode("latin-1", "replace")[:100]
                raise ConnectError(f"the proxy refused CONNECT to {self.host_header}: {reason}")
        except BaseException:
            sock.close()
            raise
        return sock

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
