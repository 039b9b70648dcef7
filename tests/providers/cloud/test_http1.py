"""The keep-alive HTTP/1.1 client of post_json, against a raw asyncio server whose bytes we choose."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Awaitable, Callable

import pytest

from providers.base import ErrorKind, ProviderError
from providers.cloud import errors
from providers.cloud.http1 import ConnectError, ConnectionDropped, Http1Pool
from tests.proxy_support import local_ca
from tests.servers import free_port

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


def reply(body: bytes, *, status: int = 200, extra: str = "") -> bytes:
    return f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    return head + await reader.readexactly(length)


class Server:
    """Counts connections; ``handler(reader, writer, n)`` serves the n-th request it received."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.closed = 0  # connections the client closed
        self.requests: list[bytes] = []
        self.port = free_port()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                self.requests.append(await read_request(reader))
                await self.handler(reader, writer, len(self.requests))
                if writer.is_closing():
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            self.closed += 1  # the client went away
            writer.close()
        except asyncio.CancelledError:
            writer.close()  # the test's loop is closing

    async def __aenter__(self) -> Http1Pool:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.pool = Http1Pool(f"http://127.0.0.1:{self.port}/api/v1")
        return self.pool

    async def __aexit__(self, *exc: object) -> None:
        await self.pool.close()
        self.server.close()


async def post(pool: Http1Pool, body: bytes = b'{"q":1}', timeout_s: float = 2.0):
    head = pool.request_head("/services/x", {"Authorization": "Bearer k", "Content-Type": "application/json"})
    return await pool.post(head, body, timeout_s)


async def test_sequential_calls_share_one_connection_and_send_a_well_formed_request() -> None:
    async def ok(reader, writer, n):
        writer.write(reply(b'{"n":%d}' % n, extra="X-Thing: a\r\nX-Thing: b\r\n"))

    server = Server(ok)
    async with server as pool:
        answers = [await post(pool, b'{"q":%d}' % i) for i in range(3)]
    assert [a.body for a in answers] == [b'{"n":1}', b'{"n":2}', b'{"n":3}']
    assert answers[0].status == 200 and answers[0].headers["x-thing"] == "a, b"
    assert server.connections == 1
    first = server.requests[0]
    assert first.startswith(b"POST /api/v1/services/x HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{server.port}\r\n".encode() in first
    assert b"Authorization: Bearer k\r\n" in first and b"Content-Length: 7\r\n" in first
    assert first.endswith(b'\r\n\r\n{"q":0}')


async def test_concurrent_calls_open_one_connection_each() -> None:
    async def slow(reader, writer, n):
        await asyncio.sleep(0.05)
        writer.write(reply(b"{}"))

    server = Server(slow)
    async with server as pool:
        await asyncio.gather(*(post(pool) for _ in range(4)))
        await asyncio.gather(*(post(pool) for _ in range(4)))
    assert server.connections == 4


async def test_a_connection_the_server_closed_while_idle_is_replaced_and_the_call_succeeds() -> None:
    async def once(reader, writer, n):
        writer.write(reply(b'{"ok":true}', extra="Connection: keep-alive\r\n"))
        await writer.drain()
        # Simulates a keep-alive timeout that fires just as the next request is written:
        # the server reads it, then closes without answering.
        await read_request(reader)
        writer.close()

    server = Server(once)
    async with server as pool:
        assert (await post(pool)).body == b'{"ok":true}'
        assert (await post(pool)).body == b'{"ok":true}'
    assert server.connections == 2


async def test_chunked_and_close_delimited_and_gzip_replies() -> None:
    async def chunked(reader, writer, n):
        if n == 1:
            writer.write(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
            )
        elif n == 2:
            packed = gzip.compress(b"zipped")
            writer.write(reply(packed, extra="Content-Encoding: gzip\r\n"))
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil-eof")
            await writer.drain()
            writer.close()

    server = Server(chunked)
    async with server as pool:
        assert (await post(pool)).body == b"abcde"
        assert (await post(pool)).body == b"zipped"
        assert (await post(pool)).body == b"until-eof"
        assert not pool._idle  # a close-delimited reply's connection is not reused


async def test_a_reply_cut_midway_is_a_retryable_error_and_not_retried() -> None:
    async def cut(reader, writer, n):
        writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"partial')
        await writer.drain()
        writer.close()

    server = Server(cut)
    async with server as pool:
        with pytest.raises(ConnectionDropped) as info:
            await post(pool)
        assert info.value.replied
        with pytest.raises(ProviderError) as translated, errors.translated():
            await post(pool)
    assert translated.value.kind is ErrorKind.RETRYABLE
    assert len(server.requests) == 2  # one send per call: a half-answered POST is never re-sent


async def test_malformed_reply_and_hang_and_refused() -> None:
    async def garbage(reader, writer, n):
        if n == 1:
            writer.write(b"SPEAK FRIEND\r\n\r\n")
        # n == 2: never answers

    server = Server(garbage)
    async with server as pool:
        with pytest.raises(ConnectionDropped, match="malformed"):
            await post(pool)
        with pytest.raises(ProviderError) as hung, errors.translated():
            await post(pool, timeout_s=0.2)
    assert hung.value.kind is ErrorKind.TIMEOUT

    refused = Http1Pool(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ConnectError):
        await post(refused)
    with pytest.raises(ProviderError) as down, errors.translated():
        await post(refused)
    assert down.value.kind is ErrorKind.UNAVAILABLE


async def test_oversized_reply_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("providers.cloud.http1.MAX_REPLY_BYTES", 10)

    async def big(reader, writer, n):
        writer.write(reply(b"x" * 50))

    async with Server(big) as pool:
        with pytest.raises(ConnectionDropped, match="larger than"):
            await post(pool)


def test_base_urls() -> None:
    pool = Http1Pool("https://dashscope.aliyuncs.com/api/v1/")
    assert (pool.host, pool.port, pool.tls, pool.host_header) == (
        "dashscope.aliyuncs.com",
        443,
        True,
        "dashscope.aliyuncs.com",
    )
    assert pool.request_head("services/a", {}).startswith(b"POST /api/v1/services/a HTTP/1.1\r\n")
    with pytest.raises(ValueError):
        Http1Pool("ws://example.com")


async def open_stream(pool: Http1Pool, timeout_s: float = 2.0):
    head = pool.request_head("/services/x", {"Accept": "text/event-stream"})
    return await pool.stream(head, b"{}", timeout_s)


async def test_a_stream_arrives_piece_by_piece_and_its_connection_is_reused() -> None:
    gate = asyncio.Event()

    async def sse(reader, writer, n):
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        writer.write(b"6\r\ndata:1\r\n")
        await writer.drain()
        await gate.wait()  # the client must see the first piece before the second is sent
        writer.write(b"6\r\ndata:2\r\n0\r\n\r\n")

    server = Server(sse)
    async with server as pool:
        stream = await open_stream(pool)
        assert stream.status == 200
        pieces = stream.chunks()
        assert await anext(pieces) == b"data:1"
        gate.set()
        assert [p async for p in pieces] == [b"data:2"]
        stream.close()
        assert len(pool._idle) == 1  # read to the end: back in the pool
        stream = await open_stream(pool)
        assert await stream.read() == b"data:1data:2"
    assert server.connections == 1


async def test_a_stream_abandoned_early_or_stalled_drops_its_connection() -> None:
    async def endless(reader, writer, n):
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nping\r\n")
        # then silence: the reader stops early (n == 1) or times out waiting (n == 2)

    server = Server(endless)
    async with server as pool:
        stream = await open_stream(pool)
        assert await anext(stream.chunks()) == b"ping"
        stream.close()
        assert not pool._idle
        # Closed soon after (STREAM_DRAIN_S): that is what tells the upstream to stop generating.
        await asyncio.sleep(0.5)
        assert server.closed == 1
        stream = await open_stream(pool, timeout_s=0.2)
        with pytest.raises(TimeoutError):
            await stream.read()
        stream.close()
        assert not pool._idle
    assert server.connections == 2


async def test_a_large_stream_with_a_slow_reader_arrives_whole() -> None:
    payload = bytes(range(256)) * 16 * 1024  # 4 MiB: the reader pauses the socket past 1 MiB

    async def big(reader, writer, n):
        writer.write(reply(payload))
        await writer.drain()

    async with Server(big) as pool:
        stream = await open_stream(pool)
        got = bytearray()
        async for chunk in stream.chunks():
            got += chunk
            await asyncio.sleep(0)
        stream.close()
        assert bytes(got) == payload
        assert len(pool._idle) == 1


async def test_a_stream_closed_before_its_last_bytes_arrive_still_returns_its_connection() -> None:
    async def sse(reader, writer, n):
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\ndata:last\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"0\r\n\r\n")  # the terminator comes after the reader has what it wanted

    server = Server(sse)
    async with server as pool:
        stream = await open_stream(pool)
        assert await anext(stream.chunks()) == b"data:last"
        stream.close()
        assert not pool._idle
        await asyncio.sleep(0.2)
        assert len(pool._idle) == 1
        stream = await open_stream(pool)
        assert await stream.read() == b"data:last"
    assert server.connections == 1


async def test_https_verifies_the_server_certificate(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ssl

    cert, key = (str(f) for f in local_ca(tmp_path))
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await read_request(reader)
            writer.write(reply(b'{"tls":true}'))
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    port = free_port()
    server = await asyncio.start_server(handle, "127.0.0.1", port, ssl=server_ctx)
    try:
        untrusted = Http1Pool(f"https://localhost:{port}/api/v1")
        with pytest.raises(ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await post(untrusted)
        monkeypatch.setenv("SSL_CERT_FILE", cert)  # the system store, as an operator would extend it
        trusted = Http1Pool(f"https://localhost:{port}/api/v1")
        assert (await post(trusted)).body == b'{"tls":true}'
        await trusted.close()
    finally:
        server.close()
