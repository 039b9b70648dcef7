"""One NLS task on its own WebSocket (reference nls-protocol.md §2): connect with the token, send
directives, read events and audio. Shared by the NLS ASR and TTS providers.

NLS runs one task per connection (the official SDKs open a socket per task), so nothing is
pooled here but aiohttp's session. A 403 at the upgrade or TaskFailed 40000001 means the cached
token was refused: it is dropped, so the next task fetches a fresh one.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import orjson

from providers.base import ErrorKind, ProviderError
from providers.cloud import nls_errors
from providers.cloud.nls_token import NlsTokenSource
from providers.cloud.proxy import EgressProxy

SUCCESS = 20000000
MAX_WS_MESSAGE_BYTES = 16 * 1024 * 1024
_CLOSED = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED)


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """Transport failures as ProviderError: refused -> UNAVAILABLE, timeout -> TIMEOUT, else RETRYABLE."""
    try:
        yield
    except ProviderError:
        raise
    except aiohttp.WSServerHandshakeError as exc:
        raise nls_errors.handshake_error(exc.status, exc.message) from None
    except TimeoutError:
        raise ProviderError(ErrorKind.TIMEOUT, "NLS did not answer in time", provider="nls") from None
    except (aiohttp.ClientConnectorError, aiohttp.ClientProxyConnectionError) as exc:
        nls_errors.log.warning("cannot connect to NLS: %r", str(exc)[:300])
        raise ProviderError(ErrorKind.UNAVAILABLE, "cannot connect to NLS", provider="nls") from None
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        nls_errors.log.warning("NLS transport failure: %s %r", type(exc).__name__, str(exc)[:300])
        raise ProviderError(ErrorKind.RETRYABLE, "NLS connection failed", provider="nls") from None


class NlsClient:
    """The aiohttp session (opened by the first provider's load, closed by the last unload),
    the token source and the gateway URL."""

    def __init__(
        self, gateway_url: str, tokens: NlsTokenSource, proxy: EgressProxy, timeout_s: float
    ) -> None:
        self.gateway_url = gateway_url
        self.tokens = tokens
        self.proxy = proxy
        self.timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None
        self._users = 0

    async def open(self) -> None:
        self._users += 1

    async def close(self) -> None:
        self._users = max(0, self._users - 1)
        if self._users == 0:
            if self._session is not None:
                session, self._session = self._session, None
                await session.close()
            await self.tokens.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        return self._session

    @contextlib.asynccontextmanager
    async def task(self, namespace: str, appkey: str) -> AsyncIterator[NlsTask]:
        token = await self.tokens.get()
        with translated():
            try:
                async with asyncio.timeout(self.timeout_s):
                    ws = await self.session.ws_connect(
                        self.gateway_url,
                        headers={"X-NLS-Token": token},
                        proxy=self.proxy.for_url(self.gateway_url),
                        ssl=self.proxy.ssl_context() or True,
                        max_msg_size=MAX_WS_MESSAGE_BYTES,
                        autoping=True,
                    )
            except aiohttp.WSServerHandshakeError as exc:
                if exc.status == 403:
                    self.tokens.invalidate(token)
                raise
        task = NlsTask(ws, namespace, appkey, self.timeout_s)
        try:
            yield task
        except ProviderError as exc:
            if exc.code == "40000001":
                self.tokens.invalidate(token)
            raise
        finally:
            await ws.close()


class NlsTask:
    """Directives out, events and audio in, for one task id."""

    def __init__(
        self, ws: aiohttp.ClientWebSocketResponse, namespace: str, appkey: str, timeout_s: float
    ) -> None:
        self.ws = ws
        self.namespace = namespace
        self.appkey = appkey
        self.timeout_s = timeout_s
        self.task_id = uuid.uuid4().hex

    async def send(self, name: str, payload: dict[str, Any] | None = None) -> None:
        header = {
            "message_id": uuid.uuid4().hex,
            "task_id": self.task_id,
            "namespace": self.namespace,
            "name": name,
            "appkey": self.appkey,
        }
        message: dict[str, Any] = {"header": header}
        if payload is not None:
            message["payload"] = payload
        message["context"] = {"sdk": {"name": "talkgate", "version": "0.1.0", "language": "python"}}
        with translated():
            await self.ws.send_str(orjson.dumps(message).decode())

    async def send_audio(self, data: bytes) -> None:
        with translated():
            await self.ws.send_bytes(data)

    async def receive(self) -> tuple[dict[str, Any] | None, bytes | None]:
        """``(event, None)`` or ``(None, audio)``; TaskFailed (or any non-success status) and an
        early close raise ProviderError. Each wait is bounded by ``timeout_s``."""
        while True:
            with translated():
                msg = await self.ws.receive(timeout=self.timeout_s)
            if msg.type is aiohttp.WSMsgType.BINARY:
                return None, msg.data
            if msg.type is aiohttp.WSMsgType.TEXT:
                with translated():
                    event = orjson.loads(msg.data)
                header = event.get("header") if isinstance(event, dict) else None
                if not isinstance(header, dict):
                    continue  # tolerate what we do not understand
                if header.get("name") == "TaskFailed" or header.get("status", SUCCESS) != SUCCESS:
                    raise nls_errors.task_failed(header)
                return event, None
            if msg.type in _CLOSED or msg.type is aiohttp.WSMsgType.ERROR:
                raise ProviderError(
                    ErrorKind.RETRYABLE, "NLS closed the WebSocket before the task completed", provider="nls"
                )

    async def wait_for(self, name: str) -> dict[str, Any]:
        """Skip events until ``name`` (audio frames are not expected here)."""
        while True:
            event, _ = await self.receive()
            if event is not None and event["header"].get("name") == name:
                return event
