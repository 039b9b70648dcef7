"""API keys and tenants: creation, listing, revocation, and fast authentication.

A key looks like ``tg_<43 url-safe chars>`` (32 random bytes). Only its SHA-256 is stored;
the plaintext is returned once, at creation. Authentication hashes the presented secret,
looks rows up by the visible prefix and compares hashes with ``hmac.compare_digest``.

Authenticated keys are cached in process for ``saas.key_cache_ttl_s`` seconds (default 5),
so a request costs no database round trip. A revocation clears this process's cache at once;
other replicas stop accepting the key within that TTL.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db import ApiKey, Tenant, create_engine, run_migrations, session_factory

KEY_PREFIX = "tg_"
PREFIX_CHARS = 8  # random characters shown after "tg_"
QUOTA_FIELDS = ("tokens", "tts_chars", "asr_seconds", "video_seconds")


class KeyStoreError(Exception):
    """A bad admin request (unknown tenant, duplicate id, ...)."""

    def __init__(self, message: str, *, status: int = 400, code: str = "invalid_request") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """What authentication needs about a key and its tenant (no secret, no hash)."""

    id: str
    tenant: str
    prefix: str
    scopes: frozenset[str]
    rpm: int | None
    tpm: int | None
    concurrency: int | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    name: str = ""
    quotas: dict[str, float | None] = field(default_factory=dict)
    #: default knowledge grounding of the key's requests (gateway/knowledge/spec.py), or None
    knowledge: dict[str, Any] | None = None

    def expired(self, now: datetime | None = None) -> bool:
        return self.expires_at is not None and (now or datetime.now(UTC)) >= self.expires_at

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "tenant": self.tenant,
            "prefix": self.prefix,
            "name": self.name,
            "scopes": sorted(self.scopes),
            "rpm": self.rpm,
            "tpm": self.tpm,
            "concurrency": self.concurrency,
            "created_at": _iso(self.created_at),
            "expires_at": _iso(self.expires_at),
            "revoked_at": _iso(self.revoked_at),
            "knowledge": self.knowledge,
        }


def _iso(value: datetime | None) -> str | None:
    return _aware(value).isoformat().replace("+00:00", "Z") if value else None


def _aware(value: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes; everything we store is UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def new_secret() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def visible_prefix(secret: str) -> str:
    return secret[: len(KEY_PREFIX) + PREFIX_CHARS]


def tenant_quotas(t: Tenant) -> dict[str, float | None]:
    return {
        "tokens": t.quota_tokens,
        "tts_chars": t.quota_tts_chars,
        "asr_seconds": t.quota_asr_seconds,
        "video_seconds": t.quota_video_seconds,
    }


def tenant_public(t: Tenant) -> dict[str, Any]:
    return {"id": t.id, "name": t.name, "created_at": _iso(t.created_at), "quotas": tenant_quotas(t)}


def _record(key: ApiKey, tenant: Tenant | None) -> KeyRecord:
    return KeyRecord(
        id=key.id,
        tenant=key.tenant_id,
        prefix=key.prefix,
        scopes=frozenset(key.scopes or ()),
        rpm=key.rpm,
        tpm=key.tpm,
        concurrency=key.concurrency,
        created_at=_aware(key.created_at),  # type: ignore[arg-type]
        expires_at=_aware(key.expires_at),
        revoked_at=_aware(key.revoked_at),
        name=key.name,
        quotas=tenant_quotas(tenant) if tenant else {},
        knowledge=key.knowledge or None,
    )


class KeyStore:
    """Tenants and API keys in the SQL database, with a short-lived in-process auth cache."""

    def __init__(self, url: str, *, cache_ttl_s: float = 5.0, cache_size: int = 10_000) -> None:
        self.url = url
        self.engine: AsyncEngine = create_engine(url)
        self.sessions = session_factory(self.engine)
        self.cache_ttl_s = cache_ttl_s
        self._cache_size = cache_size
        # sha256(secret) -> (monotonic expiry, KeyRecord or None for an unknown secret)
        self._cache: OrderedDict[str, tuple[float, KeyRecord | None]] = OrderedDict()

    async def migrate(self) -> None:
        await run_migrations(self.engine)

    async def close(self) -> None:
        await self.engine.dispose()

    # ------------------------------------------------------------------ tenants

    async def create_tenant(
        self, tenant_id: str, name: str = "", quotas: dict[str, float | None] | None = None
    ) -> dict[str, Any]:
        row = Tenant(id=tenant_id, name=name or tenant_id, created_at=datetime.now(UTC))
        _apply_quotas(row, quotas or {})
        async with self.sessions() as s:
            s.add(row)
            try:
                await s.commit()
            except IntegrityError as exc:
                raise KeyStoreError(
                    f"Tenant '{tenant_id}' already exists.", status=409, code="conflict"
                ) from exc
        return tenant_public(row)

    async def ensure_tenant(self, tenant_id: str) -> None:
        async with self.sessions() as s:
            if await s.get(Tenant, tenant_id) is None:
                s.add(Tenant(id=tenant_id, name=tenant_id, created_at=datetime.now(UTC)))
                try:
                    await s.commit()
                except IntegrityError:  # created concurrently: fine
                    await s.rollback()

    async def list_tenants(self) -> list[dict[str, Any]]:
        async with self.sessions() as s:
            rows = (await s.execute(select(Tenant).order_by(Tenant.id))).scalars().all()
        return [tenant_public(t) for t in rows]

    async def get_tenant(self, tenant_id: str) -> dict[str, Any] | None:
        async with self.sessions() as s:
            t = await s.get(Tenant, tenant_id)
        return tenant_public(t) if t else None

    async def set_quotas(self, tenant_id: str, quotas: dict[str, float | None]) -> dict[str, Any]:
        async with self.sessions() as s:
            t = await s.get(Tenant, tenant_id)
            if t is None:
                raise KeyStoreError(f"Tenant '{tenant_id}' does not exist.", status=404, code="not_found")
            _apply_quotas(t, quotas)
            await s.commit()
        self._cache.clear()  # cached keys carry their tenant's quotas
        return tenant_public(t)

    # ------------------------------------------------------------------ keys

    async def create_key(
        self,
        tenant: str,
        scopes: list[str],
        *,
        rpm: int | None = None,
        tpm: int | None = None,
        concurrency: int | None = None,
        expires_at: datetime | None = None,
        name: str = "",
        create_tenant: bool = True,
        knowledge: dict[str, Any] | None = None,
    ) -> tuple[str, KeyRecord]:
        """Creates a key; returns (plaintext secret, record). The secret is not kept anywhere."""
        if create_tenant:
            await self.ensure_tenant(tenant)
        secret = new_secret()
        row = ApiKey(
            id="key_" + uuid.uuid4().hex[:16],
            tenant_id=tenant,
            prefix=visible_prefix(secret),
            secret_sha256=hash_secret(secret),
            name=name,
            scopes=sorted(set(scopes)),
            rpm=rpm,
            tpm=tpm,
            concurrency=concurrency,
            created_at=datetime.now(UTC),
            expires_at=_aware(expires_at),
            knowledge=knowledge,
        )
        async with self.sessions() as s:
            if await s.get(Tenant, tenant) is None:
                raise KeyStoreError(f"Tenant '{tenant}' does not exist.", status=404, code="not_found")
            s.add(row)
            await s.commit()
        return secret, _record(row, None)

    async def list_keys(self, tenant: str | None = None) -> list[KeyRecord]:
        q = select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)
        if tenant is not None:
            q = q.where(ApiKey.tenant_id == tenant)
        async with self.sessions() as s:
            rows = (await s.execute(q)).scalars().all()
        return [_record(r, None) for r in rows]

    async def revoke_key(self, key_id: str) -> KeyRecord | None:
        """Marks the key revoked (idempotent) and drops it from this process's cache."""
        async with self.sessions() as s:
            row = await s.get(ApiKey, key_id)
            if row is None:
                return None
            if row.revoked_at is None:
                await s.execute(
                    update(ApiKey).where(ApiKey.id == key_id).values(revoked_at=datetime.now(UTC))
                )
                await s.commit()
                await s.refresh(row)
        self.invalidate(key_id)
        return _record(row, None)

    async def get_key(self, key_id: str) -> KeyRecord | None:
        async with self.sessions() as s:
            row = await s.get(ApiKey, key_id)
        return _record(row, None) if row is not None else None

    async def set_knowledge(self, key_id: str, knowledge: dict[str, Any] | None) -> KeyRecord | None:
        """Sets (or with None clears) the key's default knowledge grounding; None for no such key.
        The caller has checked that the stores are the key's tenant's."""
        async with self.sessions() as s:
            row = await s.get(ApiKey, key_id)
            if row is None:
                return None
            row.knowledge = knowledge
            await s.commit()
            await s.refresh(row)
        self.invalidate(key_id)
        return _record(row, None)

    def invalidate(self, key_id: str | None = None) -> None:
        if key_id is None:
            self._cache.clear()
            return
        for digest in [d for d, (_, rec) in self._cache.items() if rec is not None and rec.id == key_id]:
            self._cache.pop(digest, None)

    # ------------------------------------------------------------------ authentication

    async def authenticate(self, secret: str) -> KeyRecord | None:
        """The key for this secret (revoked/expired included: the caller decides), or None."""
        digest = hash_secret(secret)
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        record = await self._lookup(secret, digest)
        self._cache[digest] = (now + self.cache_ttl_s, record)
        self._cache.move_to_end(digest)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return record

    async def _lookup(self, secret: str, digest: str) -> KeyRecord | None:
        if not secret.startswith(KEY_PREFIX) or len(secret) < len(KEY_PREFIX) + PREFIX_CHARS:
            return None
        q = (
            select(ApiKey, Tenant)
            .join(Tenant, Tenant.id == ApiKey.tenant_id)
            .where(ApiKey.prefix == visible_prefix(secret))
        )
        async with self.sessions() as s:
            rows = (await s.execute(q)).all()
        found = None
        for key, tenant in rows:
            if hmac.compare_digest(key.secret_sha256, digest):
                found = _record(key, tenant)
        return found


def _apply_quotas(t: Tenant, quotas: dict[str, float | None]) -> None:
    unknown = set(quotas) - set(QUOTA_FIELDS)
    if unknown:
        raise KeyStoreError(
            f"Unknown quota(s): {', '.join(sorted(unknown))}. Known: {', '.join(QUOTA_FIELDS)}."
        )
    for name, value in quotas.items():
        if value is not None and value < 0:
            raise KeyStoreError(f"Quota '{name}' must be >= 0 or null (unlimited).")
        if name in ("tokens", "tts_chars") and value is not None:
            value = int(value)
        setattr(t, f"quota_{name}", value)
