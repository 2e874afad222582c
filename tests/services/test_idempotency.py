"""Idempotency answers expire after their TTL and are purged."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from aichats import clock
from aichats.errors import Invalid
from aichats.services import idempotency
from aichats.storage.database import Connection, Database
from aichats.storage.schema import idempotency_keys

pytestmark = pytest.mark.anyio
TTL = 60_000


async def run(db: Database, key: str, body: object, calls: list[int]) -> idempotency.Answer:
    async def work(tx: Connection) -> idempotency.Answer:
        calls.append(1)
        return idempotency.Answer(201, b'{"n": %d}' % len(calls))

    fingerprint = idempotency.request_hash("POST", "/x", body)
    return await idempotency.run_once(db, api_key_id="key_t", key=key, fingerprint=fingerprint, ttl_ms=TTL, work=work)


async def test_replay_then_expiry_then_purge(db: Database) -> None:
    key = idempotency.validate_key("k-" + clock.isoformat_ms(clock.now_ms()) + str(id(db)))
    calls: list[int] = []
    first = await run(db, key, {"a": 1, "b": 2}, calls)
    again = await run(db, key, {"b": 2, "a": 1}, calls)  # same JSON value, other key order
    assert again.replayed and again.body == first.body and len(calls) == 1
    with pytest.raises(Invalid):
        await run(db, key, {"a": 2}, calls)

    now = clock.now_ms()
    clock.set_clock(lambda: now + TTL + 1)
    fresh = await run(db, key, {"a": 2}, calls)  # expired: the key is free again
    assert not fresh.replayed and len(calls) == 2

    clock.set_clock(lambda: now + 3 * TTL)
    assert await idempotency.purge_expired(db, TTL) >= 1
    count = await db.fetch_one(
        sa.select(sa.func.count().label("n"))
        .select_from(idempotency_keys)
        .where(idempotency_keys.c.key == sa.bindparam("k")),
        {"k": key},
    )
    assert count is not None and count["n"] == 0


@pytest.mark.parametrize("key", ["", "x" * 256, "bad\nkey"])
def test_bad_keys(key: str) -> None:
    with pytest.raises(Invalid):
        idempotency.validate_key(key)
