"""Users: the owners of chats and API keys."""

from __future__ import annotations

import sqlalchemy as sa

from aichats import ids
from aichats.clock import now_ms
from aichats.errors import Conflict, Invalid
from aichats.storage.database import Database, UniqueViolation
from aichats.storage.schema import users

_INSERT = sa.insert(users).values(id=sa.bindparam("id"), created_at=sa.bindparam("created_at"))
_BY_ID = sa.select(users.c.id, users.c.created_at).where(users.c.id == sa.bindparam("id"))
_ANY = sa.select(users.c.id).limit(1)


async def create_user(db: Database, user_id: str | None = None) -> str:
    """Create a user, with ``user_id`` if given (it must look like ``user_...``)."""
    if user_id is None:
        user_id = ids.new_id(ids.USER)
    elif not ids.looks_like(ids.USER, user_id):
        raise Invalid("a user id is 'user_' followed by letters and digits, at most 64 characters")
    try:
        async with db.transaction() as tx:
            await tx.execute(_INSERT, {"id": user_id, "created_at": now_ms()})
    except UniqueViolation:
        raise Conflict(f"user {user_id} already exists") from None
    return user_id


async def user_exists(db: Database, user_id: str) -> bool:
    return await db.fetch_one(_BY_ID, {"id": user_id}) is not None


async def any_user(db: Database) -> bool:
    """Whether the database has at least one user (a fresh install has none)."""
    return await db.fetch_one(_ANY) is not None
