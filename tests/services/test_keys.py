"""API keys: scopes, revocation, and the PostgreSQL key cache's invalidation."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from aichats.errors import Invalid
from aichats.services import keys, users
from aichats.storage import database
from aichats.storage.database import Database
from aichats.storage.schema import api_keys
from tests.support.waiting import eventually

pytestmark = pytest.mark.anyio


def test_scopes_parse() -> None:
    assert keys.parse_scopes(None) == keys.SCOPES
    assert keys.parse_scopes("ai_chat:read, ai_chat:read ai_chat:delete") == ("ai_chat:read", "ai_chat:delete")
    with pytest.raises(Invalid):
        keys.parse_scopes("ai_chat:admin")
    with pytest.raises(Invalid):
        keys.parse_scopes(",")


async def test_only_the_hash_is_stored_and_revocation_works(db: Database) -> None:
    user_id = await users.create_user(db)
    info, secret = await keys.create_key(db, user_id, ("ai_chat:read",))
    stored = await db.fetch_all(
        sa.select(api_keys.c.key_hash, api_keys.c.prefix).where(api_keys.c.id == sa.bindparam("i")), {"i": info.id}
    )
    assert stored[0]["key_hash"] == keys.hash_key(secret) and secret not in stored[0]["key_hash"]
    principal = await keys.authenticate(db, secret)
    assert principal is not None and principal.user_id == user_id and principal.scopes == {"ai_chat:read"}
    assert await keys.revoke_key(db, info.id) is True
    assert await keys.authenticate(db, secret) is None
    assert await keys.revoke_key(db, info.id) is False


async def eventually_none(cache: keys.KeyCache, db: Database, secret: str) -> bool:
    """Whether the cache stops knowing ``secret`` within a second."""

    async def forgotten() -> bool:
        return await cache.authenticate(db, secret) is None

    return await eventually(forgotten, timeout=1.0)


postgres_only = pytest.mark.parametrize("backend", ["postgresql"], indirect=True)


async def test_key_cache_forgets_on_revocation_from_another_process(
    database_url: str, db: Database, backend: str
) -> None:
    cache = keys.KeyCache()
    await cache.attach(db)
    user_id = await users.create_user(db)
    info, secret = await keys.create_key(db, user_id)
    assert await cache.authenticate(db, secret) is not None

    other = await database.connect(database_url, pool_size=1)  # another process's view
    try:
        await keys.revoke_key(other, info.id)
    finally:
        await other.close()
    if backend == "sqlite":  # no notification crosses processes: the next request sees the commit
        assert await cache.authenticate(db, secret) is None
    assert await eventually_none(cache, db, secret)


async def test_key_cache_answers_without_a_lookup(db: Database) -> None:
    """A change that bypasses every notification (a raw UPDATE in this process) is not seen:
    the cached principal is what answers, so the cache is really used, on both databases."""
    cache = keys.KeyCache()
    await cache.attach(db)
    user_id = await users.create_user(db)
    info, secret = await keys.create_key(db, user_id)
    principal = await cache.authenticate(db, secret)
    assert principal is not None
    async with db.transaction() as tx:
        await tx.execute(
            sa.update(api_keys).where(api_keys.c.id == sa.bindparam("i")).values(revoked_at=1), {"i": info.id}
        )
    assert await cache.authenticate(db, secret) == principal
    cache.forget_all()
    assert await cache.authenticate(db, secret) is None


@postgres_only
async def test_key_cache_is_bypassed_while_deaf(db: Database) -> None:
    cache = keys.KeyCache()
    await cache.attach(db)
    user_id = await users.create_user(db)
    info, secret = await keys.create_key(db, user_id)
    assert await cache.authenticate(db, secret) is not None
    # Kill the LISTEN connection, then revoke behind the cache's back (no NOTIFY).
    listener_pid = db._listen_connection.get_server_pid()  # type: ignore[attr-defined]
    async with db.transaction() as tx:
        await tx.execute(sa.text(f"SELECT pg_terminate_backend({listener_pid})"))
        await tx.execute(
            sa.update(api_keys).where(api_keys.c.id == sa.bindparam("i")).values(revoked_at=1), {"i": info.id}
        )
    assert await eventually_none(cache, db, secret)
    assert await eventually(lambda: db.listening, timeout=4.0)  # and it listens again by itself
