"""``/admin``: API keys (with their default knowledge stores), tenants, quotas and usage export.

Authorised by ``TALKGATE_ADMIN_KEY`` (bearer) or a key with the ``admin`` scope; normal keys get
403. Admin is global (an operator credential): it sees every tenant. Secrets are returned once,
by ``POST /admin/keys``; no listing ever shows a secret or its hash.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from gateway.auth import SCOPES, Principal, require_admin
from gateway.csv_safe import write_csv
from gateway.db.queries import CSV_COLUMNS, aggregate_usage
from gateway.errors import APIError
from gateway.inputs.echo import echo
from gateway.keystore import KeyStoreError
from gateway.knowledge.api import knowledge_of, not_found
from gateway.knowledge.service import NotFound
from gateway.knowledge.spec import DEFAULT_RESULTS, MAX_DEFAULT_STORES, MAX_RESULTS

router = APIRouter(prefix="/admin", tags=["admin"])

TenantId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
#: The scopes a key may hold, from gateway/auth.py (one list: a new scope needs no edit here).
Scope = Literal[SCOPES]  # type: ignore[valid-type]


class KeyKnowledge(BaseModel):
    """A key's default grounding: the stores its chat, talk and realtime requests that name none
    are grounded in (gateway/knowledge/spec.py); they must be the key's tenant's."""

    model_config = ConfigDict(extra="forbid")

    vector_store_ids: list[str] = Field(min_length=1, max_length=MAX_DEFAULT_STORES)
    max_num_results: int = Field(default=DEFAULT_RESULTS, ge=1, le=MAX_RESULTS)


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenant: TenantId
    scopes: list[Scope] = Field(min_length=1)
    name: str = Field(default="", max_length=200)
    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)
    concurrency: int | None = Field(default=None, ge=1)
    expires_at: datetime | None = None
    knowledge: KeyKnowledge | None = None


class Quotas(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tokens: int | None = Field(default=None, ge=0)
    tts_chars: int | None = Field(default=None, ge=0)
    asr_seconds: float | None = Field(default=None, ge=0)
    video_seconds: float | None = Field(default=None, ge=0)


class TenantCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: TenantId
    name: str = Field(default="", max_length=200)
    quotas: Quotas | None = None


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def _store(request: Request) -> Any:
    keystore = request.app.state.services.keystore
    if keystore is None:
        raise APIError(503, "The key store is not configured.", type="service_unavailable")
    return keystore


def _err(exc: KeyStoreError) -> APIError:
    return APIError(exc.status, str(exc), code=exc.code)


async def _checked_knowledge(
    request: Request, tenant: str, body: KeyKnowledge | None
) -> dict[str, Any] | None:
    """The default as stored, once every store is found to be ``tenant``'s (404 otherwise: a
    store of another tenant is reported as missing, as everywhere)."""
    if body is None:
        return None
    service = knowledge_of(request)
    for store_id in body.vector_store_ids:
        try:
            await service.vector_store(tenant, store_id)
        except NotFound as exc:
            raise not_found(exc) from None
    return {
        "vector_store_ids": list(dict.fromkeys(body.vector_store_ids)),
        "max_num_results": body.max_num_results,
    }


@router.post("/keys", status_code=201)
async def create_key(body: KeyCreate, request: Request, _: Principal = require_admin) -> Response:
    expires = body.expires_at
    if expires is not None:
        expires = expires if expires.tzinfo else expires.replace(tzinfo=UTC)
        if expires <= datetime.now(UTC):
            raise APIError(400, "expires_at is in the past.", param="expires_at")
    knowledge = await _checked_knowledge(request, body.tenant, body.knowledge)
    try:
        secret, record = await _store(request).create_key(
            body.tenant,
            list(body.scopes),
            rpm=body.rpm,
            tpm=body.tpm,
            concurrency=body.concurrency,
            expires_at=expires,
            name=body.name,
            knowledge=knowledge,
        )
    except KeyStoreError as exc:
        raise _err(exc) from None
    return _json({**record.public(), "key": secret}, 201)


def _no_key(key_id: str) -> APIError:
    return APIError(404, f"No API key with id '{echo(key_id)}'.", type="not_found_error", code="not_found")


@router.put("/keys/{key_id}/knowledge")
async def set_key_knowledge(
    body: KeyKnowledge,
    request: Request,
    key_id: Annotated[str, Path(max_length=32)],
    _: Principal = require_admin,
) -> Response:
    """Sets the key's default stores (replacing any); other replicas see it within the key cache TTL."""
    store = _store(request)
    key = await store.get_key(key_id)
    if key is None:
        raise _no_key(key_id)
    record = await store.set_knowledge(key_id, await _checked_knowledge(request, key.tenant, body))
    if record is None:  # deleted meanwhile
        raise _no_key(key_id)
    return _json(record.public())


@router.delete("/keys/{key_id}/knowledge")
async def clear_key_knowledge(
    request: Request, key_id: Annotated[str, Path(max_length=32)], _: Principal = require_admin
) -> Response:
    record = await _store(request).set_knowledge(key_id, None)
    if record is None:
        raise _no_key(key_id)
    return _json(record.public())


@router.get("/keys")
async def list_keys(request: Request, tenant: str | None = None, _: Principal = require_admin) -> Response:
    keys = await _store(request).list_keys(tenant)
    return _json({"object": "list", "data": [k.public() for k in keys]})


@router.delete("/keys/{key_id}")
async def revoke_key(
    request: Request, key_id: Annotated[str, Path(max_length=32)], _: Principal = require_admin
) -> Response:
    record = await _store(request).revoke_key(key_id)
    if record is None:
        raise APIError(404, f"No API key with id '{key_id}'.", type="not_found_error", code="not_found")
    return _json(record.public())


@router.post("/tenants", status_code=201)
async def create_tenant(body: TenantCreate, request: Request, _: Principal = require_admin) -> Response:
    quotas = body.quotas.model_dump() if body.quotas else None
    try:
        tenant = await _store(request).create_tenant(body.id, body.name, quotas)
    except KeyStoreError as exc:
        raise _err(exc) from None
    return _json(tenant, 201)


@router.get("/tenants")
async def list_tenants(request: Request, _: Principal = require_admin) -> Response:
    return _json({"object": "list", "data": await _store(request).list_tenants()})


@router.put("/tenants/{tenant_id}/quotas")
async def set_quotas(
    body: Quotas,
    request: Request,
    tenant_id: Annotated[str, Path(max_length=64)],
    _: Principal = require_admin,
) -> Response:
    """Replaces all four quotas (an omitted or null quota means unlimited)."""
    try:
        return _json(await _store(request).set_quotas(tenant_id, body.model_dump()))
    except KeyStoreError as exc:
        raise _err(exc) from None


#: Accepted time range for usage queries: the epoch up to the end of year 9999 (UTC), in ms.
_MAX_TIME_MS = 253_402_300_799_999


def parse_time(value: str | None, param: str) -> int | None:
    """ISO 8601 (naive = UTC) or epoch seconds -> epoch milliseconds, range-checked."""
    if value is None or value == "":
        return None
    bad = APIError(
        400,
        f"{param} must be an ISO 8601 time or epoch seconds between 1970-01-01 and 9999-12-31 "
        f"(UTC), got '{echo(value, 64)}'.",
        param=param,
    )
    try:
        ms = int(float(value) * 1000)  # inf -> OverflowError, nan -> ValueError
    except OverflowError:
        raise bad from None
    except ValueError:
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
            ms = int((dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp() * 1000)
        except (ValueError, OverflowError):
            raise bad from None
    if not 0 <= ms <= _MAX_TIME_MS:
        raise bad
    return ms


@router.get("/usage")
async def usage(
    request: Request,
    group_by: Literal["key", "tenant", "route", "provider", "model"] = "tenant",
    bucket: Literal["minute", "hour", "day"] = "hour",
    since: str | None = None,
    until: str | None = None,
    tenant: str | None = None,
    format: Literal["json", "csv"] = Query("json"),
    _: Principal = require_admin,
) -> Response:
    """Totals per time bucket and group. Buffered rows of this replica are flushed first.

    The CSV form is neutralised for spreadsheets (``gateway.csv_safe``): a group name such as a
    model is client text."""
    services = request.app.state.services
    if services.usage is not None:
        await services.usage.flush()
    rows = await aggregate_usage(
        _store(request).sessions,
        group_by=group_by,
        bucket=bucket,
        since_ms=parse_time(since, "since"),
        until_ms=parse_time(until, "until"),
        tenant=tenant,
    )
    if format == "csv":
        return Response(
            write_csv(CSV_COLUMNS, rows),
            media_type="text/csv; charset=utf-8",
            headers={"content-disposition": f'attachment; filename="usage-{group_by}-{bucket}.csv"'},
        )
    return _json({"object": "list", "group_by": group_by, "bucket": bucket, "data": rows})
