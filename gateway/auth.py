"""Who is calling: the Principal, and the per-route scope dependency.

``require_scope(scope)`` authenticates the bearer key, checks its scope, the tenant's monthly
quota and the key's rate limits, holds a concurrency slot for the whole request (streams
included: FastAPI runs the exit of a request-scoped yield dependency after the response has
been sent, and on client disconnect), reconciles charged tokens and closes the usage row.

Auth modes (``TALKGATE_AUTH``): ``none``: everyone is the anonymous principal (tenant
"default"); ``keys``: a valid key is required on /v1; ``auto`` (default): keys required once
``TALKGATE_ADMIN_KEY`` is set. ``/admin`` routes accept the admin key or a key with the
``admin`` scope, which is a global (operator) credential, in every mode: they are never open.
Without ``TALKGATE_ADMIN_KEY`` a caller that brings no admin-scoped key gets 403 telling the
operator to set it (``auth=none`` opens /v1 only).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection

from gateway.context import RequestContext, get_context
from gateway.costs import check_quota, estimate_chat_tokens, too_large_for_the_key
from gateway.errors import APIError, from_provider_error
from gateway.schemas import read_body
from policies.quota import QUOTAS_FOR_SCOPE
from policies.ratelimit import Limits
from providers.base import ProviderError

log = logging.getLogger("talkgate.auth")

SCOPES = (
    "chat",
    "asr",
    "tts",
    "talk",
    "avatars",
    "realtime",
    "voices",
    "admin",
    "knowledge:read",
    "knowledge:write",
)
#: ``require_scope(ANY_SCOPE)``: any valid key (e.g. /v1/models); no limits charged, no usage row.
ANY_SCOPE = "*"


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: str | None
    tenant: str
    scopes: frozenset[str] = field(default_factory=lambda: frozenset(SCOPES))
    limits: dict[str, Any] = field(default_factory=dict)
    #: the key's default knowledge grounding (gateway/knowledge/spec.py), None for none
    knowledge: dict[str, Any] | None = None


ANONYMOUS = Principal(key_id=None, tenant="default")
#: The TALKGATE_ADMIN_KEY bearer: every scope, no limits, usage booked to tenant "default".
ADMIN = Principal(key_id=None, tenant="default")


def invalid_key(message: str) -> APIError:
    return APIError(401, message, type="invalid_request_error", code="invalid_api_key")


#: A browser cannot set headers on a WebSocket: OpenAI's protocol lets it send the key as a
#: subprotocol, ``Sec-WebSocket-Protocol: realtime, openai-insecure-api-key.<key>``.
SUBPROTOCOL_KEY = "openai-insecure-api-key."


def _bearer(request: HTTPConnection) -> str | None:
    value = request.headers.get("authorization")
    if not value and request.scope.get("type") == "websocket":
        for offered in request.headers.get("sec-websocket-protocol", "").split(","):
            if offered.strip().startswith(SUBPROTOCOL_KEY):
                return offered.strip().removeprefix(SUBPROTOCOL_KEY) or None
    if not value:
        return None
    scheme, _, token = value.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def admin_disabled() -> APIError:
    """/admin with no TALKGATE_ADMIN_KEY and no admin-scoped key: refused, never open."""
    return APIError(
        403,
        "The admin API is disabled: this gateway has no admin key. Set TALKGATE_ADMIN_KEY and send "
        "it as 'Authorization: Bearer <key>' (or use an API key with the 'admin' scope).",
        type="permission_error",
        code="admin_disabled",
    )


async def authenticate(request: HTTPConnection, scope: str) -> Principal:
    """The caller for ``scope``: 401 for a missing/unknown/revoked/expired key, 403 for a wrong scope."""
    services = request.app.state.services
    settings = services.settings
    admin = scope == "admin"
    if not admin and not settings.auth_required:
        return ANONYMOUS
    token = _bearer(request)
    if admin and token is None and not settings.admin_key:
        raise admin_disabled()
    if token is None:
        raise invalid_key(
            "You didn't provide an API key. Send it as 'Authorization: Bearer <key>' "
            "(keys are created with 'talkgate keys create' or POST /admin/keys)."
        )
    if settings.admin_key and hmac.compare_digest(token.encode(), settings.admin_key.encode()):
        return ADMIN
    record = await services.keystore.authenticate(token) if services.keystore is not None else None
    if record is None:
        log.info("rejected an unknown API key (prefix %s)", token[:11] if token.startswith("tg_") else "-")
        if admin and not settings.admin_key:
            raise admin_disabled()  # most likely a client sending an admin key the server lacks
        raise invalid_key("Incorrect API key provided. Check the key or create a new one.")
    if record.revoked_at is not None:
        raise invalid_key(f"The API key {record.prefix}… has been revoked.")
    if record.expired():
        raise invalid_key(f"The API key {record.prefix}… expired at {record.public()['expires_at']}.")
    if scope != ANY_SCOPE and scope not in record.scopes:
        detail = "admin routes need the admin key or a key with the 'admin' scope" if admin else ""
        raise APIError(
            403,
            f"The API key {record.prefix}… lacks the '{scope}' scope (it has: "
            f"{', '.join(sorted(record.scopes)) or 'none'}). {detail}".rstrip(),
            type="permission_error",
            code="insufficient_scope",
        )
    defaults = settings.saas
    limits = {
        "rpm": record.rpm if record.rpm is not None else defaults.default_rpm,
        "tpm": record.tpm if record.tpm is not None else defaults.default_tpm,
        "concurrency": record.concurrency if record.concurrency is not None else defaults.default_concurrency,
        "quotas": record.quotas,
    }
    return Principal(
        key_id=record.id,
        tenant=record.tenant,
        scopes=record.scopes,
        limits=limits,
        knowledge=record.knowledge,
    )


def _status_of(exc: BaseException) -> int:
    if isinstance(exc, APIError):
        return exc.status
    if isinstance(exc, ProviderError):
        return from_provider_error(exc).status
    if isinstance(exc, HTTPException):
        return exc.status_code
    if isinstance(exc, RequestValidationError):
        return 422
    if isinstance(exc, asyncio.CancelledError):
        return 499  # client went away
    return 500


def rate_limited(reason: str, decision: Any, limits: Limits) -> APIError:
    what = {
        "requests": f"{limits.rpm} requests per minute",
        "tokens": f"{limits.tpm} tokens per minute",
        "concurrency": f"{limits.concurrency} concurrent requests",
    }[reason]
    return APIError(
        429,
        f"Rate limit reached for this API key: {what}. Retry after {decision.headers()['retry-after']} s.",
        type="rate_limit_error",
        code="rate_limit_exceeded",
        headers=decision.headers(),
    )


async def _admit(
    request: HTTPConnection, principal: Principal, scope: str, ctx: RequestContext
) -> dict[str, Any]:
    """Quota then rate limits; returns what the exit needs to undo or reconcile."""
    services = request.app.state.services
    state: dict[str, Any] = {"limits": None, "slot": None, "charged": 0}
    if principal.key_id is None:
        return state
    quotas = principal.limits.get("quotas") or {}
    if services.quota is not None and quotas:
        await check_quota(services, principal, quotas, QUOTAS_FOR_SCOPE.get(scope, ()))
    limits = Limits(
        principal.limits.get("rpm"), principal.limits.get("tpm"), principal.limits.get("concurrency")
    )
    if not limits.any or services.limiter is None:
        return state
    tokens = 0
    # A JSON body is read before the key's slot is taken (a slow upload holds no slot) and kept
    # for the route; a multipart body (/v1/talk, transcriptions) stays unread for the route's
    # streaming parser, which spools files to disk (its reads are bounded by the body timeout).
    is_json = request.headers.get("content-type", "").startswith("application/json")
    if is_json and isinstance(request, Request):
        body = await read_body(request, services.settings.max_upload_bytes)
        request._body = body  # what Starlette's own body() caches: the route reads it from here
        if limits.tpm and scope == "chat":
            tokens = estimate_chat_tokens(body, services.settings)
            if tokens > limits.tpm:  # could never be admitted: a clear 400, not a clamped charge
                raise too_large_for_the_key(tokens, limits.tpm)
    decision = await services.limiter.acquire(principal.key_id, limits, tokens)
    if not decision.allowed:
        if services.metrics is not None:
            services.metrics.rate_limited(principal.tenant, decision.reason)
        raise rate_limited(decision.reason, decision, limits)
    ctx.extra.setdefault("response_headers", {}).update(decision.headers())
    state.update(limits=limits, slot=decision.slot, charged=tokens if limits.tpm else 0)
    return state


def _settle_stream(ctx: RequestContext) -> dict[str, Any]:
    """The usage measurements so far; a streamed chat books its tokens however it ended (499 if cut)."""
    pending = ctx.extra.get("usage") or {}
    meter = ctx.extra.get("stream_meter")
    if meter is not None:
        try:
            meter.settle(pending)
        except Exception:
            log.exception("booking a stream's tokens failed")
    return pending


async def _finish(
    request: HTTPConnection,
    principal: Principal,
    ctx: RequestContext,
    state: dict[str, Any],
    status: int | None,
    started_ms: int,
) -> None:
    """Release the slot, reconcile tokens, book the usage row. Must never raise."""
    services = request.app.state.services
    pending = _settle_stream(ctx)
    limits = state.get("limits")
    try:
        if state.get("slot"):
            await services.limiter.release(principal.key_id, state["slot"])
        if limits is not None and limits.tpm:
            actual = int(pending.get("tokens_in", 0)) + int(pending.get("tokens_out", 0))
            if actual != state["charged"]:
                await services.limiter.adjust_tokens(principal.key_id, limits, actual - state["charged"])
    except Exception:
        log.exception("releasing rate-limit state failed")
    _book(request, principal, ctx, pending, status, started_ms)


async def _close(
    request: HTTPConnection,
    principal: Principal,
    ctx: RequestContext,
    state: dict[str, Any],
    status: int | None,
    started_ms: int,
) -> None:
    """After the response: free the limiter state and book the row, even for a cancelled request."""
    limits = state.get("limits")
    if state.get("slot") or (limits is not None and limits.tpm):
        # Shielded: a cancelled (disconnected) request still frees its slot and books its row.
        await asyncio.shield(_finish(request, principal, ctx, state, status, started_ms))
    else:
        # Nothing to await, so nothing a cancellation could cut: no task for the shield.
        _book(request, principal, ctx, _settle_stream(ctx), status, started_ms)


def _book(
    request: HTTPConnection,
    principal: Principal,
    ctx: RequestContext,
    pending: dict[str, Any],
    status: int | None,
    started_ms: int,
) -> None:
    services = request.app.state.services
    if services.usage is None:
        return
    route = request.scope.get("route")
    services.usage.add(
        {
            **pending,
            "request_id": ctx.request_id,
            "ts_ms": started_ms,
            "key_id": principal.key_id,
            "tenant": principal.tenant,
            "route": pending.get("route") or getattr(route, "path", None) or request.url.path,
            "provider": pending.get("provider") or ctx.provider,
            "model": (pending.get("model") or ctx.model or "")[:128] or None,  # what the client asked for
            "fallback": ctx.fallback,
            "cache": ctx.cache,
            "latency_ms": (time.perf_counter() - ctx.started) * 1000.0,
            "status": pending.get("status") or status or ctx.extra.get("status") or 200,
        }
    )


def _bind(request: HTTPConnection, principal: Principal) -> RequestContext:
    ctx = get_context(request)
    ctx.tenant = principal.tenant
    ctx.key_id = principal.key_id
    ctx.user = ctx.user or request.headers.get("x-talkgate-user") or principal.key_id
    return ctx


async def run_admitted(
    request: Request, scope: str, endpoint: Callable[[Principal], Awaitable[None]]
) -> None:
    """``require_scope(scope)`` without FastAPI's dependency machinery, for the lean chat path
    (gateway/fastpath.py): the same checks, slot and usage row. ``endpoint`` sends the whole
    response, so the row is booked after the last byte, as the request-scoped dependency does."""
    principal = await authenticate(request, scope)
    ctx = _bind(request, principal)
    started_ms = int(time.time() * 1000)
    state = await _admit(request, principal, scope, ctx)
    status: int | None = None
    try:
        await endpoint(principal)
    except BaseException as exc:
        status = _status_of(exc)
        raise
    finally:
        await _close(request, principal, ctx, state, status, started_ms)


@contextlib.asynccontextmanager
async def admitted(conn: HTTPConnection, principal: Principal, scope: str) -> AsyncIterator[RequestContext]:
    """``require_scope``'s quota, rate limits, concurrency slot and usage row around one unit of
    work that is not a whole HTTP request: a task on the DashScope inference WebSocket, which
    books one row per task. The caller has authenticated ``principal`` for ``scope`` and put a
    fresh RequestContext in ``conn.scope["talkgate.ctx"]``."""
    ctx = _bind(conn, principal)
    started_ms = int(time.time() * 1000)
    state = await _admit(conn, principal, scope, ctx)
    status: int | None = None
    try:
        yield ctx
    except BaseException as exc:
        status = _status_of(exc)
        raise
    finally:
        await _close(conn, principal, ctx, state, status, started_ms)


def require_scope(scope: str) -> Any:
    """FastAPI dependency: authenticate and authorise the caller for ``scope``."""

    async def dependency(request: HTTPConnection) -> AsyncIterator[Principal]:
        principal = await authenticate(request, scope)
        ctx = _bind(request, principal)
        if scope in ("admin", ANY_SCOPE):
            yield principal
            return
        started_ms = int(time.time() * 1000)
        state = await _admit(request, principal, scope, ctx)
        status: int | None = None  # set when the route fails; else the status sent wins
        try:
            yield principal
        except BaseException as exc:
            status = _status_of(exc)
            raise
        finally:
            await _close(request, principal, ctx, state, status, started_ms)

    dependency.talkgate_scope = scope  # type: ignore[attr-defined]  # lets tests audit every route
    return Depends(dependency, scope="request")


#: For admin routes: the admin key, or a key with the "admin" scope (same as require_scope("admin")).
require_admin = require_scope("admin")
