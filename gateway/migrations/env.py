"""Alembic environment: runs on a connection handed over by the gateway, or opens its own.

The gateway passes its connection in ``config.attributes["connection"]`` (see
``gateway.db.engine.run_migrations``). Run from the ``alembic`` command, the URL comes from
``sqlalchemy.url`` or, failing that, from talkgate's Settings (TALKGATE_DATABASE_URL).
"""

from __future__ import annotations

import asyncio
from logging.config import fileConfig

from alembic import context
from sqlalchemy.engine import Connection

from gateway.db.models import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from gateway.settings import Settings

    return Settings().resolved_database_url


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    from gateway.db.engine import create_engine

    engine = create_engine(_url())
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_run)
    finally:
        await engine.dispose()


def run_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    given = config.attributes.get("connection")
    if given is not None:
        _run(given)
    else:
        if config.config_file_name and not config.attributes.get("skip_logging"):
            fileConfig(config.config_file_name, disable_existing_loggers=False)
        asyncio.run(_run_async())
