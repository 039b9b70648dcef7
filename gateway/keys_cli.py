"""``talkgate keys create|list|revoke``: key management straight against the database.

Uses the same Settings as the server (TALKGATE_DATABASE_URL, TALKGATE_DATA_DIR) and runs the
migrations first, so it also works before the gateway has ever started. The secret is
printed once, at creation.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime
from typing import Any

from gateway.auth import SCOPES
from gateway.knowledge.spec import DEFAULT_RESULTS, MAX_DEFAULT_STORES, MAX_RESULTS


def add_keys_parser(subparsers: Any) -> None:
    keys = subparsers.add_parser("keys", help="manage API keys (create, list, revoke)")
    sub = keys.add_subparsers(dest="keys_command", required=True)

    p = sub.add_parser("create", help="create a key; its secret is printed once")
    p.add_argument("--tenant", required=True)
    p.add_argument("--scopes", required=True, help=f"comma-separated, from: {','.join(SCOPES)}")
    p.add_argument("--name", default="")
    p.add_argument("--rpm", type=int)
    p.add_argument("--tpm", type=int)
    p.add_argument("--concurrency", type=int)
    p.add_argument("--expires-at", help="ISO 8601 time (UTC when no offset is given)")
    p.add_argument(
        "--knowledge",
        help="comma-separated vector store ids of the tenant: the key's default grounding",
    )
    p.add_argument(
        "--knowledge-results",
        type=int,
        help=f"passages per answer from those stores (default {DEFAULT_RESULTS})",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=_run(_create))

    p = sub.add_parser("list", help="list keys (never secrets)")
    p.add_argument("--tenant")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_run(_list))

    p = sub.add_parser("revoke", help="revoke a key by id")
    p.add_argument("key_id")
    p.set_defaults(func=_run(_revoke))


def _run(command: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        return asyncio.run(_with_store(command, args))

    return run


async def _with_store(command: Any, args: argparse.Namespace) -> int:
    from gateway.keystore import KeyStore, KeyStoreError
    from gateway.settings import Settings

    settings = Settings()
    store = KeyStore(settings.resolved_database_url)
    try:
        await store.migrate()
        return await command(store, args)
    except (KeyStoreError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        await store.close()


def _positive(name: str, value: int | None) -> int | None:
    if value is not None and value < 1:
        raise ValueError(f"--{name} must be at least 1")
    return value


async def _create(store: Any, args: argparse.Namespace) -> int:
    scopes = [s.strip() for s in args.scopes.split(",") if s.strip()]
    unknown = sorted(set(scopes) - set(SCOPES))
    if not scopes or unknown:
        raise ValueError(
            f"unknown scope(s) {', '.join(unknown) or '(none given)'}; known: {', '.join(SCOPES)}"
        )
    expires = None
    if args.expires_at:
        expires = datetime.fromisoformat(args.expires_at.replace("Z", "+00:00"))
        expires = expires if expires.tzinfo else expires.replace(tzinfo=UTC)
        if expires <= datetime.now(UTC):
            # A key that is expired on creation is always a mistake (a wrong year, a missing offset).
            raise ValueError(
                f"--expires-at {args.expires_at} is in the past; give a future time "
                "(ISO 8601, UTC when no offset is given)"
            )
    secret, record = await store.create_key(
        args.tenant,
        scopes,
        rpm=_positive("rpm", args.rpm),
        tpm=_positive("tpm", args.tpm),
        concurrency=_positive("concurrency", args.concurrency),
        expires_at=expires,
        name=args.name,
        knowledge=await _knowledge(store, args),
    )
    if args.json:
        print(json.dumps({**record.public(), "key": secret}))
    else:
        print(f"id:     {record.id}\ntenant: {record.tenant}\nscopes: {','.join(sorted(record.scopes))}")
        print(f"key:    {secret}\n(store it now: the key is not shown again)")
    return 0


async def _knowledge(store: Any, args: argparse.Namespace) -> dict[str, Any] | None:
    """The key's default stores, as ``POST /admin/keys`` takes them: each must be the tenant's."""
    if args.knowledge is None:
        if args.knowledge_results is not None:
            raise ValueError("--knowledge-results needs --knowledge")
        return None
    from gateway.knowledge.store import KnowledgeStore
    from gateway.settings import Settings

    ids = list(dict.fromkeys(i.strip() for i in args.knowledge.split(",") if i.strip()))
    if not 1 <= len(ids) <= MAX_DEFAULT_STORES:
        raise ValueError(f"--knowledge takes 1 to {MAX_DEFAULT_STORES} vector store ids")
    results = DEFAULT_RESULTS if args.knowledge_results is None else args.knowledge_results
    if not 1 <= results <= MAX_RESULTS:
        raise ValueError(f"--knowledge-results must be between 1 and {MAX_RESULTS}")
    stores = KnowledgeStore(store.sessions, Settings().data_dir / "knowledge")
    missing = [i for i in ids if await stores.get_store(args.tenant, i) is None]
    if missing:
        raise ValueError(f"no vector store {', '.join(missing)} of tenant '{args.tenant}'")
    return {"vector_store_ids": ids, "max_num_results": results}


async def _list(store: Any, args: argparse.Namespace) -> int:
    records = await store.list_keys(args.tenant)
    if args.json:
        print(json.dumps([r.public() for r in records]))
        return 0
    print(f"{'id':22} {'prefix':12} {'tenant':16} {'scopes':24} {'status':8} created")
    for r in records:
        k = r.public()
        status = "revoked" if r.revoked_at else "expired" if r.expired() else "active"
        print(
            f"{k['id']:22} {k['prefix']:12} {k['tenant']:16} {','.join(k['scopes']):24} {status:8} {k['created_at']}"
        )
    return 0


async def _revoke(store: Any, args: argparse.Namespace) -> int:
    record = await store.revoke_key(args.key_id)
    if record is None:
        print(f"error: no key with id {args.key_id}", file=sys.stderr)
        return 1
    print(f"revoked {record.id} ({record.prefix}…) at {record.public()['revoked_at']}")
    return 0
