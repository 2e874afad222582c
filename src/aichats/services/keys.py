"""API keys: bearer credentials bound to one user and a set of scopes.

A key is shown once, when created; only its SHA-256 is stored. Keys carry 192 random
bits, so a fast hash is enough (slow password hashes guard low-entropy secrets).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from functools import lru_cache

import sqlalchemy as sa

from aichats import ids
from aichats.clock import now_ms
from aichats.errors import Invalid, NotFound
from aichats.services.users import user_exists
from aichats.storage.database import Database
from aichats.storage.schema import api_keys

SCOPES = ("ai_chat:read", "ai_chat:create", "ai_chat:update", "ai_chat:delete")
KEY_PREFIX = "ak_"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the key's user and what the key may do."""

    user_id: str
    key_id: str
    scopes: frozenset[str]


@dataclass(frozen=True, slots=True)
class KeyInfo:
    id: str
    user_id: str
    prefix: str
    scopes: tuple[str, ...]
    created_at: int
    revoked_at: int | None


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def parse_scopes(text: str | None) -> tuple[str, ...]:
    """Scopes from ``"ai_chat:read,ai_chat:create"``; all of them when ``None``."""
    if text is None:
        return SCOPES
    scopes = tuple(dict.fromkeys(s.strip() for s in text.replace(" ", ",").split(",") if s.strip()))
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise Invalid(f"unknown scope(s) {', '.join(unknown) or '(none given)'}; known: {', '.join(SCOPES)}")
    return scopes


_INSERT = sa.insert(api_keys).values(
    {c: sa.bindparam(c) for c in ("id", "user_id", "key_hash", "prefix", "scopes", "created_at")}
)
_BY_HASH = sa.select(api_keys.c.id, api_keys.c.user_id, api_keys.c.scopes).where(
    api_keys.c.key_hash == sa.bindparam("key_hash"), api_keys.c.revoked_at.is_(None)
)
_BY_USER = sa.select(api_keys).where(api_keys.c.user_id == sa.bindparam("user_id")).order_by(api_keys.c.pk)
_REVOKE = (
    sa.update(api_keys)
    .where(api_keys.c.id == sa.bindparam("key_id"), api_keys.c.revoked_at.is_(None))
    .values(revoked_at=sa.bindparam("now"))
)
_EXISTS = sa.select(api_keys.c.id).where(api_keys.c.id == sa.bindparam("key_id"))
_LIVE = sa.select(api_keys.c.id).where(api_keys.c.id == sa.bindparam("key_id"), api_keys.c.revoked_at.is_(None))


async def create_key(db: Database, user_id: str, scopes: tuple[str, ...] = SCOPES) -> tuple[KeyInfo, str]:
    """Create a key for ``user_id``; returns its record and the secret (shown once)."""
    if not await user_exists(db, user_id):
        raise NotFound(f"no user {user_id}")
    secret = KEY_PREFIX + secrets.token_urlsafe(24)
    info = KeyInfo(ids.new_id(ids.API_KEY), user_id, secret[:10], scopes, now_ms(), None)
    async with db.transaction() as tx:
        await tx.execute(
            _INSERT,
            {
                "id": info.id,
                "user_id": user_id,
                "key_hash": hash_key(secret),
                "prefix": info.prefix,
                "scopes": ",".join(scopes),
                "created_at": info.created_at,
            },
        )
    return info, secret


async def list_keys(db: Database, user_id: str) -> list[KeyInfo]:
    rows = await db.fetch_all(_BY_USER, {"user_id": user_id})
    return [
        KeyInfo(r["id"], r["user_id"], r["prefix"], tuple(r["scopes"].split(",")), r["created_at"], r["revoked_at"])
        for r in rows
    ]


async def revoke_key(db: Database, key_id: str) -> bool:
    """Revoke ``key_id``: it fails from the next request on, and the notification ends the
    streams it has open in every server process. False if already revoked."""
    async with db.transaction() as tx:
        if await tx.fetch_one(_EXISTS, {"key_id": key_id}) is None:
            raise NotFound(f"no API key {key_id}")
        revoked = await tx.execute(_REVOKE, {"key_id": key_id, "now": now_ms()}) == 1
        await tx.notify(KEYS_CHANNEL, key_id)
        return revoked


KEYS_CHANNEL = "aichats_keys"


async def is_live(db: Database, key_id: str) -> bool:
    """Whether the key still works: what an open stream asks again when keys change (never
    from the cache, which is exactly what a revocation empties)."""
    return await db.fetch_one(_LIVE, {"key_id": key_id}) is not None


class KeyCache:
    """Principals of keys seen recently, so that most requests skip the key lookup.

    Correct only while every key change reaches this process: the cache is used only
    while ``db.listening`` (PostgreSQL LISTEN on ``aichats_keys``, to which
    :func:`revoke_key` sends a NOTIFY in its transaction; in an SQLite server the same
    notification within the process), and any notification, or a lost listening
    connection, empties it. Another process's commit to an SQLite database (the CLI
    revoking a key) sends no notification: there, the cache is emptied at the first
    request after any such commit (:meth:`Database.others_stamp`, read at every
    request). A lookup that raced with a change is not stored (the generation moved
    while it ran).
    """

    MAX_ENTRIES = 10_000

    def __init__(self) -> None:
        self._entries: dict[str, Principal] = {}
        self._generation = 0
        self._stamp = 0  # db.others_stamp() when the entries were last checked

    def forget_all(self, _payload: str | None = None) -> None:
        self._generation += 1
        self._entries.clear()

    async def attach(self, db: Database) -> None:
        await db.listen(KEYS_CHANNEL, self.forget_all)

    async def authenticate(self, db: Database, secret: str) -> Principal | None:
        return await self.authenticate_hash(db, hash_key(secret))

    def cached(self, db: Database, key_hash: str) -> Principal | None:
        """The principal of ``key_hash`` if the cache holds it and may be trusted now; None
        otherwise (then :meth:`authenticate_hash` looks it up). Not a coroutine: a hit, the
        usual case, awaits nothing."""
        if not db.listening:
            return None
        stamp = db.others_stamp()
        if stamp != self._stamp:
            self._stamp = stamp
            self.forget_all()
        return self._entries.get(key_hash)

    async def authenticate_hash(self, db: Database, key_hash: str) -> Principal | None:
        hit = self.cached(db, key_hash)
        if hit is not None:
            return hit
        generation = self._generation
        principal = await _lookup(db, key_hash)
        if principal is not None and db.listening and generation == self._generation:
            if len(self._entries) >= self.MAX_ENTRIES:
                self._entries.clear()
            self._entries[key_hash] = principal
        return principal


async def authenticate(db: Database, secret: str, cache: KeyCache | None = None) -> Principal | None:
    """The principal of a live key, or None for an unknown or revoked one."""
    return await authenticate_hash(db, hash_key(secret), cache)


async def authenticate_hash(db: Database, key_hash: str, cache: KeyCache | None = None) -> Principal | None:
    """:func:`authenticate` for a key already hashed (:func:`hash_key`), by a caller that
    needs the hash itself too (the failed-authentication limit)."""
    if cache is not None:
        return await cache.authenticate_hash(db, key_hash)
    return await _lookup(db, key_hash)


async def _lookup(db: Database, key_hash: str) -> Principal | None:
    row = await db.fetch_one(_BY_HASH, {"key_hash": key_hash})
    if row is None:
        return None
    return Principal(row["user_id"], row["id"], _scope_set(row["scopes"]))


@lru_cache(maxsize=64)
def _scope_set(text: str) -> frozenset[str]:
    return frozenset(text.split(","))
