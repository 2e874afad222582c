"""Set parameters instead of loops: a list of ids is one statement, whatever its length.

Statements are counted where every one of them passes, ``database.compile_statement``
(called for each execution, on both databases).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from aichats import clock
from aichats.agent import context
from aichats.agent.models import load_model
from aichats.config import Settings
from aichats.errors import NotFound
from aichats.services import chats, files, notifications, users, webhooks
from aichats.services.chats import NewChat
from aichats.services.messages import NewMessage, add_user_message, create_chat, list_messages
from aichats.services.pagination import PageRequest
from aichats.storage import database
from aichats.storage.database import Database

pytestmark = pytest.mark.anyio


@pytest.fixture
def statements(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The SQL of every statement run from now on, in order."""
    seen: list[str] = []
    compile_statement = database.compile_statement

    def counted(statement: object, dialect: str) -> database.Compiled:
        compiled = compile_statement(statement, dialect)  # type: ignore[arg-type]
        seen.append(" ".join(compiled.sql.split()))
        return compiled

    monkeypatch.setattr(database, "compile_statement", counted)
    yield seen


def starting(seen: list[str], prefix: str) -> list[str]:
    return [sql for sql in seen if sql.startswith(prefix)]


async def new_chat(db: Database, user_id: str | None = None, file_ids: tuple[str, ...] = ()) -> dict:
    user_id = user_id or await users.create_user(db)
    async with db.transaction() as tx:
        chat = await create_chat(tx, user_id, NewChat(NewMessage("hello", file_ids=file_ids)))
    return dict(await chats.get_chat(db, user_id, chat["id"]))


async def with_notifications(db: Database, count: int) -> tuple[dict, list[str]]:
    chat = await new_chat(db)
    async with db.transaction() as tx:
        for i in range(count):
            await notifications.notify(tx, chat, kind="ai_chat.reply", title="t", body=f"reply {i}")
    page, unread = await notifications.list_notifications(db, chat["user_id"], PageRequest(first=100))
    assert unread == count
    return chat, [row["id"] for row in page.items]


async def test_mark_read_of_100_ids_is_one_statement(db: Database, statements: list[str]) -> None:
    chat, ids = await with_notifications(db, 100)
    assert await chats.badges(db, chat["user_id"]) == {chat["id"]: 100}
    statements.clear()
    assert await notifications.mark_read(db, chat["user_id"], ids) == 100
    assert len(starting(statements, "UPDATE notifications")) == 1, statements
    assert await notifications.unread_count(db, chat["user_id"]) == 0
    assert await notifications.badges(db, chat["user_id"]) == {}  # the badges follow


async def test_mark_read_counts_each_unread_notification_of_the_user_once(db: Database) -> None:
    chat, ids = await with_notifications(db, 3)
    other, theirs = await with_notifications(db, 1)
    # A repeated id, an unknown one and another user's count nothing (nor change theirs).
    assert await notifications.mark_read(db, chat["user_id"], [ids[0], ids[0], "ntf_unknown", theirs[0]]) == 1
    assert await notifications.unread_count(db, chat["user_id"]) == 2
    assert await notifications.unread_count(db, other["user_id"]) == 1
    assert await notifications.mark_read(db, chat["user_id"], ids) == 2  # the read one is not counted again
    assert await notifications.mark_read(db, chat["user_id"], []) == 0
    assert await notifications.badges(db, chat["user_id"]) == {}


async def test_mark_read_reads_at_most_max_ids(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    chat, ids = await with_notifications(db, 3)
    monkeypatch.setattr(notifications, "MAX_IDS", 2)
    assert await notifications.mark_read(db, chat["user_id"], ids) == 2
    assert await notifications.unread_count(db, chat["user_id"]) == 1


async def test_enqueue_writes_every_delivery_in_one_statement(db: Database, statements: list[str]) -> None:
    user_id = await users.create_user(db)
    hooks = []
    for events in (["notification.created"], ["ai_chat.run.failed"], ["notification.created", "ai_chat.run.failed"]):
        data = webhooks.NewWebhook(url="http://127.0.0.1:9/hook", events=tuple(events))
        hooks.append(await webhooks.create_webhook(db, user_id, data, allow_private=True))
    other = await users.create_user(db)  # another user's webhook hears nothing of this one's events
    spy = webhooks.NewWebhook(url="http://127.0.0.1:9/spy", events=("ai_chat.run.failed",))
    await webhooks.create_webhook(db, other, spy, allow_private=True)

    statements.clear()
    async with db.transaction() as tx:
        assert await webhooks.enqueue(tx, user_id, "ai_chat.run.failed", {"ai_chat_id": "aich_x"}) == 2
    assert len(statements) == 2, statements  # the webhooks, then every delivery
    assert len(starting(statements, "INSERT INTO webhook_deliveries")) == 1

    queued = {}
    for hook in hooks:
        row = await webhooks.get_webhook(db, user_id, hook["id"])
        queued[hook["id"]] = await webhooks.deliveries(db, row["pk"])
    first, second, both = (queued[hook["id"]] for hook in hooks)
    assert first == []
    assert len(second) == len(both) == 1
    assert second[0]["id"] != both[0]["id"] and second[0]["id"].startswith("msg_")
    for delivery in (second[0], both[0]):
        assert delivery["event_type"] == "ai_chat.run.failed" and delivery["status"] == "pending"
        assert delivery["payload"]["type"] == "ai_chat.run.failed"
        assert delivery["payload"]["data"] == {"ai_chat_id": "aich_x"}
        assert delivery["next_attempt_at"] is not None and delivery["attempts"] == []

    statements.clear()
    async with db.transaction() as tx:
        assert await webhooks.enqueue(tx, user_id, "ai_chat.schedule.deactivated", {}) == 0
    assert len(statements) == 1, statements  # no subscriber: nothing written


async def upload(db: Database, tmp_path: Path, user_id: str, name: str, data: bytes) -> str:
    record = await files.save_upload(
        db, files_dir=str(tmp_path), max_bytes=1000, user_id=user_id, filename=name, content_type="text/plain",
        data=data,
    )  # fmt: skip
    return str(record["id"])


async def test_a_messages_attachments_are_read_in_one_query(
    db: Database, tmp_path: Path, statements: list[str]
) -> None:
    user_id = await users.create_user(db)
    first, second = [await upload(db, tmp_path, user_id, f"{n}.txt", n.encode()) for n in ("one", "two")]
    chat = await new_chat(db, user_id)
    attachments = (second, first, second)  # in this order, the repeat kept
    statements.clear()
    async with db.transaction() as tx:
        message = await add_user_message(
            tx, user_id=user_id, chat_pk=chat["pk"], chat_id=chat["id"],
            data=NewMessage("see", file_ids=attachments), now=clock.now_ms(),
        )  # fmt: skip
    assert len(starting(statements, "SELECT files.")) == 1, statements
    shown = [(a["id"], a["filename"]) for a in orjson.loads(message["attachments"])]
    assert shown == [(second, "two.txt"), (first, "one.txt"), (second, "two.txt")]

    statements.clear()
    async with db.transaction() as tx:
        message = await add_user_message(
            tx, user_id=user_id, chat_pk=chat["pk"], chat_id=chat["id"], data=NewMessage("none"),
            now=clock.now_ms(),
        )  # fmt: skip
    assert starting(statements, "SELECT files.") == []  # no attachment, no query


async def test_a_missing_attachment_is_named(db: Database, tmp_path: Path) -> None:
    user_id = await users.create_user(db)
    mine = await upload(db, tmp_path, user_id, "mine.txt", b"mine")
    theirs = await upload(db, tmp_path, await users.create_user(db), "theirs.txt", b"theirs")
    chat = await new_chat(db, user_id)
    before = await list_messages(db, chat["pk"], PageRequest())
    for attachments, missing in [([mine, theirs], theirs), (["file_nothing", theirs], "file_nothing")]:
        data = NewMessage("see", file_ids=tuple(attachments))
        with pytest.raises(NotFound, match=f"^no file {missing}$"):
            async with db.transaction() as tx:
                await add_user_message(
                    tx, user_id=user_id, chat_pk=chat["pk"], chat_id=chat["id"], data=data, now=clock.now_ms()
                )
    assert (await list_messages(db, chat["pk"], PageRequest())).items == before.items


async def test_the_historys_attachments_are_read_in_one_query(
    db: Database, tmp_path: Path, statements: list[str]
) -> None:
    settings = Settings(model="test:echo", files_dir=str(tmp_path))
    user_id = await users.create_user(db)
    one, two, three = [await upload(db, tmp_path, user_id, f"{n}.txt", n.encode()) for n in ("one", "two", "three")]
    chat = await new_chat(db, user_id, file_ids=(one,))
    async with db.transaction() as tx:
        for text, attached in [("second", [two, three]), ("third", [three])]:
            data = NewMessage(text, file_ids=tuple(attached))
            await add_user_message(
                tx, user_id=user_id, chat_pk=chat["pk"], chat_id=chat["id"], data=data, now=clock.now_ms()
            )
    chat["current_company_id"] = None
    statements.clear()
    sent = await context.build(db, settings, load_model("test:echo", settings), chat, 10**12)
    assert len(starting(statements, "SELECT files.")) == 1, statements
    assert [m.content for m in sent[1:]] == [
        "hello\n\n[Attached file one.txt]\none",
        "second\n\n[Attached file two.txt]\ntwo\n\n[Attached file three.txt]\nthree",
        "third\n\n[Attached file three.txt]\nthree",
    ]
