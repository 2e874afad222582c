"""A chat created on its own (``create_chat_alone``, the API's create without an
Idempotency-Key) is stored exactly as :func:`create_chat` stores it in a transaction: on
PostgreSQL in one statement, elsewhere (and with attachments) in that transaction."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from aichats import clock
from aichats.errors import NotFound
from aichats.services import events, runs, users
from aichats.services.chats import AgentIdentifier, NewChat
from aichats.services.messages import MessageSource, NewMessage, create_chat, create_chat_alone
from aichats.storage import database
from aichats.storage.database import Database
from aichats.storage.schema import ai_chats, chat_events, messages
from aichats.storage.schema import runs as runs_table

pytestmark = pytest.mark.anyio
NOW = 1_765_000_000_123


def new_chat() -> NewChat:
    first = NewMessage("What were last week's sales?", source=MessageSource.suggestion, suggestion_type="weekly")
    return NewChat(
        first, title="Sales", current_company_id="biz_1", agent_identifier=AgentIdentifier.general, tools=("builtin",)
    )


async def stored(db: Database, chat_id: str) -> dict[str, Any]:
    """Every row the chat's creation wrote, with pks and ids replaced by their roles."""
    chat = await db.fetch_one(sa.select(ai_chats).where(ai_chats.c.id == chat_id))
    assert chat is not None
    chat_pk = chat["pk"]
    rows = await db.fetch_all(sa.select(messages).where(messages.c.chat_pk == chat_pk).order_by(messages.c.pk))
    names = {rows[0]["pk"]: "question", rows[1]["pk"]: "reply"}
    turns = await db.fetch_all(sa.select(runs_table).where(runs_table.c.chat_pk == chat_pk))
    appended = await db.fetch_all(sa.select(chat_events).where(chat_events.c.chat_pk == chat_pk))

    def plain(row: Any, *, drop: tuple[str, ...] = ("pk", "id", "chat_pk")) -> dict[str, Any]:
        return {k: names.get(v, v) if k.endswith("message_pk") else v for k, v in dict(row).items() if k not in drop}

    event_data = [orjson.loads(e["data"]) for e in appended]
    for data in event_data:
        assert data.pop("id") == rows[0]["id"]
        assert data.pop("ai_chat_id") == chat_id
    return {
        "chat": plain(chat),
        "messages": [plain(m) for m in rows],
        "runs": [plain(r) for r in turns],
        "events": [plain(e, drop=("pk", "chat_pk", "data")) for e in appended],
        "event_data": event_data,
    }


async def test_a_chat_created_alone_is_stored_as_in_a_transaction(db: Database) -> None:
    clock.set_clock(lambda: NOW)  # both creations at the same instant: only ids and pks differ
    user_id = await users.create_user(db)
    async with db.transaction() as tx:
        in_transaction = await create_chat(tx, user_id, new_chat())
    alone = await create_chat_alone(db, user_id, new_chat())

    assert "pk" not in alone  # not read back (PostgreSQL groups its statement with others')
    assert alone["id"] != in_transaction["id"]
    assert {k: v for k, v in alone.items() if k != "id"} == {
        k: v for k, v in in_transaction.items() if k not in ("pk", "id")
    }
    expected = await stored(db, in_transaction["id"])
    assert await stored(db, alone["id"]) == expected
    assert expected["runs"][0]["status"] == "queued"
    assert expected["runs"][0]["user_message_pk"] == "question"
    assert expected["runs"][0]["assistant_message_pk"] == "reply"
    assert expected["event_data"][0]["content"] == "What were last week's sales?"


async def test_on_postgresql_it_is_one_statement(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    user_id = await users.create_user(db)
    seen: list[str] = []
    compile_statement = database.compile_statement

    def counted(statement: Any, dialect: str) -> database.Compiled:
        compiled = compile_statement(statement, dialect)
        seen.append(compiled.sql.lstrip())
        return compiled

    monkeypatch.setattr(database, "compile_statement", counted)
    await create_chat_alone(db, user_id, new_chat())
    if db.dialect == "postgresql":
        assert len(seen) == 1 and seen[0].startswith("WITH")
    else:
        assert len(seen) == 5  # the chat, its two messages, the turn and the event


async def test_its_workers_and_readers_are_told(db: Database) -> None:
    heard: dict[str, list[str | None]] = {runs.CHANNEL: [], events.CHANNEL: []}
    both = asyncio.Event()

    def listener(channel: str) -> database.Listener:
        def hear(payload: str | None) -> None:
            heard[channel].append(payload)
            if all(heard.values()):
                both.set()

        return hear

    for channel in heard:
        await db.listen(channel, listener(channel))
    user_id = await users.create_user(db)
    chat = await create_chat_alone(db, user_id, new_chat())
    await asyncio.wait_for(both.wait(), 10)
    row = await db.fetch_one(sa.select(ai_chats.c.pk).where(ai_chats.c.id == chat["id"]))
    assert row is not None
    assert heard == {runs.CHANNEL: [str(row["pk"])], events.CHANNEL: [str(row["pk"])]}


async def test_a_missing_attachment_stores_nothing(db: Database) -> None:
    user_id = await users.create_user(db)
    with pytest.raises(NotFound, match="no file file_missing"):
        await create_chat_alone(db, user_id, NewChat(NewMessage("see this", file_ids=("file_missing",))))
    assert await db.fetch_all(sa.select(ai_chats.c.pk).where(ai_chats.c.user_id == user_id)) == []


async def test_chats_created_together_each_get_their_own_rows(db: Database) -> None:
    """Creates at the same time (one group on PostgreSQL) each store the same rows as one
    alone: no message, turn or event goes to another's chat."""
    clock.set_clock(lambda: NOW)
    user_id = await users.create_user(db)
    async with db.transaction() as tx:
        first = await create_chat(tx, user_id, new_chat())
    expected = await stored(db, first["id"])
    created = await asyncio.gather(*(create_chat_alone(db, user_id, new_chat()) for _ in range(20)))
    assert len({chat["id"] for chat in created}) == 20
    for chat in created:
        assert await stored(db, chat["id"]) == expected
