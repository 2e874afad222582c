"""Accounts: a new user and API key, made with the services (the CLI's own tests use the CLI)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aichats.services import keys, users
from aichats.storage import database


@dataclass
class Account:
    user_id: str
    key: str
    file_id: str | None = None

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def make_account(database_url: str, scopes: str | None = None) -> Account:
    """A new user and key (all scopes unless ``scopes`` is given) in ``database_url``."""

    async def run() -> Account:
        db = await database.connect(database_url, pool_size=1)
        try:
            user_id = await users.create_user(db)
            _, secret = await keys.create_key(db, user_id, keys.parse_scopes(scopes))
            return Account(user_id, secret)
        finally:
            await db.close()

    return asyncio.run(run())
