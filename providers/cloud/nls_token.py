"""NLS access tokens: CreateToken through ``aliyun-python-sdk-core``, cached, refreshed in the background.

Why a cache and a refresher: CreateToken is rate-limited (``Throttling.User``) and a token serves
any number of tasks until its ``ExpireTime`` (Unix seconds; a new token does not invalidate the
old one), so a request must never wait for, or cause, a CreateToken of its own. The first caller
fetches (concurrent first callers share that one fetch); afterwards a background task replaces the
token ``refresh_margin_s`` before it expires, and a caller only fetches itself when the cached
token is already inside that margin (the refresher failed for that long).

``aliyunsdkcore`` is blocking (vendored requests) and tries once: each attempt runs in a worker
thread, with our own retries (tenacity, exponential backoff) on transient failures only. Its
proxy handling ignores ``NO_PROXY``, so every call passes an explicit proxy choice from
``EgressProxy``. The AccessKey secret is held as ``SecretStr`` and only revealed to the SDK call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

from providers.base import RETRYABLE_KINDS, ErrorKind, ProviderError
from providers.cloud import nls_errors
from providers.cloud.proxy import EgressProxy

log = logging.getLogger("talkgate.providers.nls")

#: aliyunsdkcore logs each response body at DEBUG ("Response received ... Response-body: ..."),
#: which for CreateToken is the token itself: such records are dropped (see ``_RedactTokens``).
SDK_LOGGER = "aliyunsdkcore.client"
_TOKEN_RE = re.compile(r'"Token"\s*:')

#: After a failed background refresh, try again this soon (and keep serving the cached token).
REFRESH_RETRY_S = 30.0


#: A token this close to its ExpireTime is not handed out any more (a task must still open with
#: it); for a token living less than ten times this, a tenth of its life instead.
EXPIRY_SLACK_S = 5.0


@dataclass(frozen=True, slots=True)
class Token:
    id: str
    expire_time: float  # Unix seconds
    refresh_at: float  # Unix seconds: when the background refresher replaces it
    usable_until: float  # Unix seconds: handed out until then, fetched anew after


@dataclass(slots=True)
class TokenStats:
    fetches: int = 0  # CreateToken calls that returned a token
    failures: int = 0  # failed attempts (each retry counts)
    hits: int = 0  # get() answered from the cache
    waits: int = 0  # get() had to wait for a fetch


class _RedactTokens(logging.Filter):
    """Drops aliyunsdkcore's debug records that carry a CreateToken answer (the bearer token)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except (TypeError, ValueError):
            return True
        return not _TOKEN_RE.search(text)


def _guard_sdk_logger() -> None:
    logger = logging.getLogger(SDK_LOGGER)
    if not any(isinstance(f, _RedactTokens) for f in logger.filters):
        logger.addFilter(_RedactTokens())


def _secret(value: Any) -> str:
    reveal = getattr(value, "get_secret_value", None)
    return str(reveal() if callable(reveal) else value or "")


class NlsTokenSource:
    """One cached token for one AccessKey. ``get()`` is cheap after the first call."""

    def __init__(
        self,
        *,
        access_key_id: Any,
        access_key_secret: Any,
        region: str,
        endpoint: str,
        version: str,
        proxy: EgressProxy,
        timeout_s: float = 10.0,
        refresh_margin_s: float = 600.0,
        attempts: int = 3,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._ak = access_key_id
        self._secret = access_key_secret
        self.region = region
        parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        self.protocol = parts.scheme or "https"
        self.domain = parts.netloc
        self.url = f"{self.protocol}://{self.domain}/"
        self.version = version
        self.proxy = proxy
        self.timeout_s = timeout_s
        self.refresh_margin_s = refresh_margin_s
        self.attempts = max(1, attempts)
        self.clock = clock
        self.stats = TokenStats()
        self._token: Token | None = None
        self._fetching: asyncio.Task[Token] | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._client: Any = None
        _guard_sdk_logger()

    # ------------------------------------------------------------------ public

    @property
    def cached(self) -> Token | None:
        return self._token

    async def get(self) -> str:
        """The cached token while it is valid (a due refresh runs in the background); a caller
        waits only when there is none yet or it has expired. Raises ProviderError when none can be had."""
        token = self._token
        now = self.clock()
        if token is not None and now < token.usable_until:
            self.stats.hits += 1
            if now >= token.refresh_at and (self._fetching is None or self._fetching.done()):
                self._fetching = asyncio.create_task(self._fetch_with_retries())
                self._fetching.add_done_callback(_consume)
            return token.id
        self.stats.waits += 1
        token = await self._shared_fetch()
        self._ensure_refresher()
        return token.id

    def invalidate(self, token_id: str) -> None:
        """NLS refused this token (403 / 40000001): the next get() fetches a new one."""
        if self._token is not None and self._token.id == token_id:
            self._token = None

    async def close(self) -> None:
        for task in (self._refresher, self._fetching):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        self._refresher = self._fetching = None

    # ------------------------------------------------------------------ fetching

    async def _shared_fetch(self) -> Token:
        if self._fetching is None or self._fetching.done():
            self._fetching = asyncio.create_task(self._fetch_with_retries())
        return await asyncio.shield(self._fetching)

    async def _fetch_with_retries(self) -> Token:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.attempts),
            wait=wait_exponential(multiplier=0.2, max=4.0),
            retry=retry_if_exception(lambda e: isinstance(e, ProviderError) and e.kind in RETRYABLE_KINDS),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                try:
                    token_id, expire_time = await asyncio.to_thread(self._fetch_blocking)
                except ProviderError:
                    self.stats.failures += 1
                    raise
        now = self.clock()
        lifetime = max(expire_time - now, 0.0)
        # Normally refresh_margin_s before expiry; a token shorter-lived than twice the margin
        # is refreshed at half its life instead, so the refresher never spins.
        refresh_at = now + max(lifetime - self.refresh_margin_s, lifetime / 2)
        token = Token(token_id, expire_time, refresh_at, expire_time - min(EXPIRY_SLACK_S, lifetime / 10))
        self._token = token
        self.stats.fetches += 1
        log.info("NLS token fetched; it expires in %.0f s", token.expire_time - self.clock())
        return token

    def _acs_client(self) -> Any:
        if self._client is None:
            from aliyunsdkcore.client import AcsClient

            self._client = AcsClient(
                _secret(self._ak),
                _secret(self._secret),
                self.region,
                auto_retry=False,
                timeout=self.timeout_s,
                connect_timeout=self.timeout_s,
                proxy=self.proxy.requests_proxies(self.url),
                verify=self.proxy.ca_file,  # None: the SDK's own CA bundle
            )
        return self._client

    def _fetch_blocking(self) -> tuple[str, float]:
        """One CreateToken attempt (runs in a worker thread)."""
        from aliyunsdkcore.acs_exception.exceptions import ClientException, ServerException
        from aliyunsdkcore.http import protocol_type
        from aliyunsdkcore.request import CommonRequest

        request = CommonRequest()
        request.set_method("POST")
        request.set_domain(self.domain)
        # The SDK tests ``protocol is protocol_type.HTTPS`` (identity, not equality): an equal
        # string from urlsplit would silently fall back to plain http.
        request.set_protocol_type(protocol_type.HTTPS if self.protocol == "https" else protocol_type.HTTP)
        request.set_version(self.version)
        request.set_action_name("CreateToken")
        try:
            raw = self._acs_client().do_action_with_exception(request)
        except (ServerException, ClientException) as exc:
            raise nls_errors.token_error(exc) from None
        try:
            token = json.loads(raw)["Token"]
            return str(token["Id"]), float(token["ExpireTime"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ProviderError(
                ErrorKind.RETRYABLE, "NLS CreateToken answered without a token", provider="nls"
            ) from exc

    # ------------------------------------------------------------------ background refresh

    def _ensure_refresher(self) -> None:
        if self._refresher is None or self._refresher.done():
            self._refresher = asyncio.create_task(self._refresh_loop(), name="nls-token-refresh")

    async def _refresh_loop(self) -> None:
        while True:
            token = self._token
            delay = REFRESH_RETRY_S if token is None else token.refresh_at - self.clock()
            await asyncio.sleep(max(delay, 0.05))
            try:
                await self._shared_fetch()
            except ProviderError as exc:
                log.warning("NLS token refresh failed (%s); retrying in %.0f s", exc.code, REFRESH_RETRY_S)
                await asyncio.sleep(REFRESH_RETRY_S)


def _consume(task: asyncio.Task[Any]) -> None:
    """A background fetch's failure is logged by the refresher's next round, not raised here."""
    if not task.cancelled():
        task.exception()
