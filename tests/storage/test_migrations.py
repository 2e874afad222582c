"""The Alembic history builds exactly the schema in ``schema.py``, on both databases."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from aichats.storage import migrate
from aichats.storage.database import sqlalchemy_url
from aichats.storage.schema import metadata


def schema_differences(database_url: str) -> list:
    def compare(connection: sa.Connection) -> list:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(context, metadata)

    url = sqlalchemy_url(database_url)
    if url.startswith("sqlite"):
        engine = sa.create_engine(url)
        with engine.connect() as connection:
            return compare(connection)

    async def run() -> list:
        async_engine = create_async_engine(url, poolclass=sa.NullPool)
        async with async_engine.connect() as connection:
            result = await connection.run_sync(compare)
        await async_engine.dispose()
        return result

    return asyncio.run(run())


def test_migrated_database_matches_the_models(database_url: str) -> None:
    assert schema_differences(database_url) == []


def test_upgrade_is_idempotent(database_url: str) -> None:
    migrate.upgrade(database_url)
    assert schema_differences(database_url) == []


def test_downgrade_and_upgrade_round_trip(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'roundtrip.db'}"
    migrate.upgrade(url)
    command.downgrade(migrate.alembic_config(url), "base")
    engine = sa.create_engine(url)
    assert set(sa.inspect(engine).get_table_names()) == {"alembic_version"}
    migrate.upgrade(url)
    assert schema_differences(url) == []


def test_upgrade_to_0005_drops_the_deltas_kept_so_far(tmp_path) -> None:
    """Before 0005 every ``message.delta`` was kept forever; the upgrade deletes them (every
    reply's final event has its whole text, and a reply cut off by the upgrade starts over)."""
    url = f"sqlite:///{tmp_path / 'deltas.db'}"
    command.upgrade(migrate.alembic_config(url), "0004")
    engine = sa.create_engine(url)  # foreign keys are not enforced: events without a chat will do
    insert = sa.text("INSERT INTO chat_events (chat_pk, type, data, created_at) VALUES (1, :type, '{}', 0)")
    with engine.begin() as connection:
        for type_ in ("message.created", "message.delta", "message.delta", "message.completed"):
            connection.execute(insert, {"type": type_})
    migrate.upgrade(url)
    with engine.connect() as connection:
        kinds = connection.execute(sa.text("SELECT type FROM chat_events ORDER BY pk")).scalars().all()
    assert kinds == ["message.created", "message.completed"]
