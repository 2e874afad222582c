"""Alembic environment: one migration history for SQLite and PostgreSQL.

The URL comes from the Alembic config (set by :func:`aichats.storage.migrate.upgrade`)
or, for the ``alembic`` command line, from ``AICHATS_DATABASE_URL``. On PostgreSQL an
advisory lock makes concurrent starters (several servers and workers) take turns.
"""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from alembic import context
from sqlalchemy.ext.asyncio import create_async_engine

from aichats.config import get_settings
from aichats.storage.database import sqlalchemy_url
from aichats.storage.schema import metadata

MIGRATION_LOCK = 7_420_001  # pg_advisory_lock key, arbitrary but fixed


def _url() -> str:
    return context.config.get_main_option("sqlalchemy.url") or get_settings().database_url


def _run(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(sa.text(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})"))
        context.run_migrations()


async def _run_postgres(url: str) -> None:
    engine = create_async_engine(url, poolclass=sa.NullPool)
    async with engine.connect() as connection:
        await connection.run_sync(_run)
    await engine.dispose()


def run_migrations_online() -> None:
    url = sqlalchemy_url(_url())
    if url.startswith("postgresql"):
        asyncio.run(_run_postgres(url))
        return
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    with engine.connect() as connection:
        _run(connection)
    engine.dispose()


if context.is_offline_mode():
    context.configure(url=sqlalchemy_url(_url()), target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
