"""One keep-alive HTTP + WebSocket client for all Bailian providers.

JSON calls, whole or streamed as SSE, go through ``Http1Pool`` (providers/cloud/http1.py),
which costs far less CPU per call than aiohttp's ``ClientSession`` on the chat hot path; the
inference WebSocket and result downloads use one aiohttp ``ClientSession``. Both are opened
by the first provider's ``load()`` and closed by the last ``unload()`` (reference counted),
never per request. Every call asks ``EgressProxy`` (providers/cloud/proxy.py) whether it goes
through the egress proxy; aiohttp is never left to read the environment on its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from providers.base import ErrorKind, ProviderError
from providers.cloud import errors
from providers.cloud.http1 import Http1Pool
from providers.cloud.proxy import EgressProxy

#: Largest SSE event we accept (base64 audio chunks can be big); guards memory.
MAX_SSE_EVENT_BYTES = 16 * 1024 * 1024
#: Largest WebSocket message (CosyVoice binary audio frames).
MAX_WS_MESSAGE_BYTES = 32 * 1024 * 1024
#: DashScope closes an idle inference WebSocket 60 s after its task ends; reuse well before that.
WS_IDLE_REUSE_S = 45.0
#: Open connections of the plain-call pool (providers/cloud/http1.py), as aiohttp's connector had.
HTTP_POOL_LIMIT = 512
#: An idle keep-alive connection older than this is closed rather than reused.
HTTP_IDLE_REUSE_S = 30.0
USER_AGENT = "talkgate"
#: Idle WebSockets kept for reuse (each saves a TLS + upgrade handshake on the next task).
WS_POOL_SIZE = 8


@dataclass(slots=True)
class SseEvent:
    """One server-sent event: ``event`` name, ``status`` from ``:HTTP_STATUS/`` or ``status:``, parsed data."""

    event: str
    status: int | None
    data: Any


_EVENT_NAMES = {b"result": "result", b"error": "error"}


def _status(digits: bytes) -> int | None:
    try:
        return int(digits)
    except ValueError:
        return None


def parse_sse_block(block: bytes) -> SseEvent | None:
    """Parse one event (the lines between blank lines). Unknown lines and comments are ignored."""
    event = "result"
    status: int | None = None
    data: bytes | None = None
    for line in block.split(b"\n"):
        first = line[:1]  # one comparison rules out most prefixes (e.g. "id:" lines)
        if first == b"d" and line.startswith(b"data:"):
            piece = line[5:]
            data = piece if data is None else data + b"\n" + piece
        elif first == b"e" and line.startswith(b"event:"):
            name = line[6:].strip()
            event = _EVENT_NAMES.get(name) or name.decode("ascii", "replace")
        elif first == b":" and line.startswith(b":HTTP_STATUS/"):
            status = _status(line[13:]) or status
        elif first == b"s" and line.startswith(b"status:"):
            status = _status(line[7:]) or status
    if data is None:
        return None
    return SseEvent(event, status, orjson.loads(data))


async def iter_sse(chunks: AsyncIterable[bytes]) -> AsyncIterator[SseEvent]:
    """Split a byte stream (chunks as they arrive) into events on blank lines; tolerates CRLF."""
    buffer = b""
    async for chunk in chunks:
        if b"\r" in chunk:
            chunk = chunk.replace(b"\r\n", b"\n")
        buffer = buffer + chunk if buffer else chunk
        end = buffer.rfind(b"\n\n")
        if end >= 0:  # every complete event in this chunk, split in one call
            complete, buffer = buffer[:end], buffer[end + 2 :]
            for block in complete.split(b"\n\n"):
                event = parse_sse_block(block)
                if event is not None:
                    yield event
        if len(buffer) > MAX_SSE_EVENT_BYTES:
            raise ProviderError(ErrorKind.RETRYABLE, "DashScope sent an SSE event larger than 16 MiB")
    tail = buffer.strip()
    if tail:
        event = parse_sse_block(tail)
        if event is not None:
            yield event


class DashScopeClient:
    """Authenticated access to the native HTTP API and the inference WebSocket.

    Base URLs are taken with or without a trailing slash. Every call is bounded by
    ``upstream_timeout_s`` (whole call for plain HTTP; connect and idle-read for streams
    and WebSockets); the router adds its own deadlines on top.
    """

    def __init__(self, settings: Any) -> None:
        self.api_key: str | None = settings.dashscope_api_key
        self.http_base = settings.dashscope_http_base_url.rstrip("/")
        self.ws_url = settings.dashscope_websocket_base_url.rstrip("/")
        self.timeout_s = float(settings.upstream_timeout_s)
        self.proxy = EgressProxy.from_settings(settings)
        self._session: aiohttp.ClientSession | None = None
        self._http: Http1Pool | None = None
        self._heads: dict[tuple[str, bool], bytes] = {}  # (path, sse) -> request head
        self._users = 0
        self._idle_ws: list[tuple[aiohttp.ClientWebSocketResponse, float]] = []
        auth = {"Authorization": f"Bearer {self.api_key or ''}"}
        self.auth_headers = auth
        self._json_headers = {
            **auth,
            "Content-Type": "application/json; charset=utf-8",
            "Accept": "application/json; charset=utf-8",
            "User-Agent": USER_AGENT,
        }
        self._sse_headers = {
            **auth,
            "Content-Type": "application/json; charset=utf-8",
            "Accept": "text/event-stream",
            "X-DashScope-SSE": "enable",
            "User-Agent": USER_AGENT,
        }
        t = self.timeout_s
        self._plain_timeout = aiohttp.ClientTimeout(total=t, sock_connect=t)
        self._stream_timeout = aiohttp.ClientTimeout(total=None, sock_connect=t, sock_read=t)

    # ------------------------------------------------------------------ lifecycle

    @property
    def configured(self) -> bool:
        return bool(self.api_key)

    @property
    def is_open(self) -> bool:
        return self._session is not None and not self._session.closed

    async def open(self) -> None:
        """Take a reference; the session itself is created on first use."""
        self._users += 1
        self.session  # noqa: B018 - create now, inside the running loop

    async def close(self) -> None:
        """Drop a reference; the last one closes the session and its pooled connections."""
        self._users = max(0, self._users - 1)
        if self._users == 0 and self._session is not None:
            idle, self._idle_ws = self._idle_ws, []
            for ws, _ in idle:
                await ws.close()
            session, self._session = self._session, None
            await session.close()
        if self._users == 0 and self._http is not None:
            pool, self._http = self._http, None
            await pool.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=512, ttl_dns_cache=300, keepalive_timeout=30)
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._stream_timeout,
                json_serialize=lambda o: orjson.dumps(o).decode(),
            )
        return self._session

    @property
    def http(self) -> Http1Pool:
        """The keep-alive pool for JSON calls, whole (``post_json``) or streamed (``stream_sse``)."""
        if self._http is None or self._http.closed:
            self._http = Http1Pool(
                self.http_base,
                limit=HTTP_POOL_LIMIT,
                idle_s=HTTP_IDLE_REUSE_S,
                proxy=self.proxy.for_url(self.http_base),
                ssl_context=self.proxy.ssl_context(),
            )
            self._heads = {}
        return self._http

    def _head(self, path: str, *, sse: bool) -> bytes:
        head = self._heads.get((path, sse))
        if head is None:
            headers = self._sse_headers if sse else self._json_headers
            head = self._heads[(path, sse)] = self.http.request_head(path, headers)
        return head

    def url(self, path: str) -> str:
        return f"{self.http_base}/{path.lstrip('/')}"

    # ------------------------------------------------------------------ HTTP

    async def post_json(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST a native request; returns the parsed reply or raises a classified ProviderError."""
        with errors.translated():
            answer = await self.http.post(self._head(path, sse=False), orjson.dumps(body), self.timeout_s)
            if answer.status != 200:
                raise errors.http_error(answer.status, _json_or_bytes(answer.body), answer.headers)
            reply = orjson.loads(answer.body)
        if isinstance(reply, dict) and reply.get("code") and not reply.get("output"):
            raise errors.http_error(200, reply, None)  # business error sent with HTTP 200
        if not isinstance(reply, dict):
            raise ProviderError(ErrorKind.RETRYABLE, "DashScope reply is not a JSON object")
        return reply

    async def stream_sse(self, path: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """POST a streaming request; yields each event's data. ``event:error`` raises ProviderError."""
        with errors.translated():
            stream = await self.http.stream(self._head(path, sse=True), orjson.dumps(body), self.timeout_s)
            try:
                if stream.status != 200:
                    raise errors.http_error(
                        stream.status, _json_or_bytes(await stream.read()), stream.headers
                    )
                async for event in iter_sse(stream.chunks()):
                    if event.event == "error":
                        raise errors.http_error(event.status or 400, event.data, stream.headers)
                    yield event.data
            finally:
                stream.close()

    async def download(self, url: str) -> bytes:
        """GET a result file (an OSS URL in production): no Authorization, it would break the signature."""
        with errors.translated():
            async with self.session.get(
                url,
                timeout=self._plain_timeout,
                proxy=self.proxy.for_url(url),
                ssl=self.proxy.ssl_context() or True,
            ) as resp:
                raw = await resp.read()
                if resp.status != 200:
                    raise errors.http_error(resp.status, _json_or_bytes(raw), resp.headers)
                return raw

    # ------------------------------------------------------------------ WebSocket

    async def connect_ws(self) -> aiohttp.ClientWebSocketResponse:
        """Open the inference WebSocket; a refused handshake (bad key: 401) raises AUTH."""
        with errors.translated():
            async with asyncio.timeout(self.timeout_s):
                return await self.session.ws_connect(
                    self.ws_url,
                    headers=self.auth_headers,
                    max_msg_size=MAX_WS_MESSAGE_BYTES,
                    autoping=True,
                    compress=0,
                    proxy=self.proxy.for_url(self.ws_url),
                    ssl=self.proxy.ssl_context() or True,
                )

    @property
    def pooled_websockets(self) -> list[aiohttp.ClientWebSocketResponse]:
        """Idle sockets waiting for their next task (oldest first)."""
        return [ws for ws, _ in self._idle_ws]

    async def acquire_ws(self) -> tuple[aiohttp.ClientWebSocketResponse, bool]:
        """A WebSocket for a new task: an idle pooled one if fresh enough, else a new one.

        Returns ``(ws, reused)``. A reused socket may have been closed by the server in the
        meantime; the caller reconnects once if such a socket fails before task-started.
        """
        now = asyncio.get_running_loop().time()
        while self._idle_ws:
            ws, since = self._idle_ws.pop()
            if not ws.closed and now - since < WS_IDLE_REUSE_S:
                return ws, True
            await ws.close()
        return await self.connect_ws(), False

    async def release_ws(self, ws: aiohttp.ClientWebSocketResponse, reusable: bool) -> None:
        """Return a socket after its task; only one whose task finished cleanly is kept."""
        if reusable and not ws.closed and self.is_open and len(self._idle_ws) < WS_POOL_SIZE:
            self._idle_ws.append((ws, asyncio.get_running_loop().time()))
        else:
            await ws.close()


def _json_or_bytes(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw
