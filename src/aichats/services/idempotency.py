"""Idempotent POSTs: a retried request with the same ``Idempotency-Key`` replays the answer.

The stored answer is written in the same transaction as the work it describes, so a
crash leaves either both or neither. Keys belong to the API key that sent them. The
same key with a different body is refused with 422 (not 409: clients retry 409).
Two identical requests racing on PostgreSQL: the second waits on the unique index,
then replays the first's answer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import orjson
import sqlalchemy as sa

from aichats.clock import now_ms
from aichats.errors import Invalid
from aichats.storage.database import Connection, Database, Row, UniqueViolation
from aichats.storage.schema import idempotency_keys

MAX_KEY_LENGTH = 255

_t = idempotency_keys.c
_FIND = sa.select(_t.pk, _t.request_hash, _t.status_code, _t.response_body, _t.created_at).where(
    _t.api_key_id == sa.bindparam("api_key_id"), _t.key == sa.bindparam("key")
)
_FORGET = sa.delete(idempotency_keys).where(_t.pk == sa.bindparam("pk"))
_REMEMBER = sa.insert(idempotency_keys).values(
    {c: sa.bindparam(c) for c in ("api_key_id", "key", "request_hash", "status_code", "response_body", "created_at")}
)
_PURGE = sa.delete(idempotency_keys).where(_t.created_at < sa.bindparam("before"))


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes
    replayed: bool = False


def request_hash(method: str, path: str, body: object) -> str:
    """Fingerprint of a request: same method, path and JSON value (key order ignored)."""
    canonical = orjson.dumps([method, path, body], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


def validate_key(key: str) -> str:
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise Invalid(f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable characters")
    return key


def _replay(row: Row, fingerprint: str) -> Answer:
    if row["request_hash"] != fingerprint:
        raise Invalid("this Idempotency-Key was already used with a different request; use a new key")
    return Answer(row["status_code"], row["response_body"].encode(), replayed=True)


async def run_once(
    db: Database,
    *,
    api_key_id: str,
    key: str,
    fingerprint: str,
    ttl_ms: int,
    work: Callable[[Connection], Awaitable[Answer]],
) -> Answer:
    """Do ``work`` once per (API key, idempotency key); replay its answer afterwards."""
    params = {"api_key_id": api_key_id, "key": key}
    try:
        async with db.transaction() as tx:
            row = await tx.fetch_one(_FIND, params)
            if row is not None:
                if row["created_at"] >= now_ms() - ttl_ms:
                    return _replay(row, fingerprint)
                await tx.execute(_FORGET, {"pk": row["pk"]})
            answer = await work(tx)
            await tx.execute(
                _REMEMBER,
                {
                    **params,
                    "request_hash": fingerprint,
                    "status_code": answer.status,
                    "response_body": answer.body.decode(),
                    "created_at": now_ms(),
                },
            )
            return answer
    except UniqueViolation:
        row = await db.fetch_one(_FIND, params)
        if row is None:  # pragma: no cover - the winner's row vanished (TTL purge)
            raise
        return _replay(row, fingerprint)


async def purge_expired(db: Database, ttl_ms: int) -> int:
    """Delete answers older than the TTL; returns how many."""
    async with db.transaction() as tx:
        return await tx.execute(_PURGE, {"before": now_ms() - ttl_ms})
