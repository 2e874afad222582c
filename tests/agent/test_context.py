"""What a turn sends its model: system prompt, company, attachments, trimmed history."""

from __future__ import annotations

import sys
import threading

import pytest

from aichats import clock
from aichats.agent import context
from aichats.agent.models import load_model, parse_spec
from aichats.config import Settings
from aichats.services import chats, files, users
from aichats.services.chats import AgentIdentifier, NewChat
from aichats.services.messages import NewMessage, add_user_message, create_chat
from aichats.storage.database import Database

pytestmark = pytest.mark.anyio
LAST = 10**12  # a reply after every message: the whole chat is history


async def chat_with(db: Database, *texts: str, **fields: object) -> tuple[dict, int]:
    user_id = await users.create_user(db)
    async with db.transaction() as tx:
        chat = await create_chat(tx, user_id, NewChat(NewMessage(texts[0]), **fields))  # type: ignore[arg-type]
        for text in texts[1:]:
            data = NewMessage(text)
            await add_user_message(
                tx, user_id=user_id, chat_pk=chat["pk"], chat_id=chat["id"], data=data, now=clock.now_ms()
            )
    row = await chats.get_chat(db, user_id, chat["id"])
    return dict(row) | {"current_company_id": fields.get("current_company_id")}, LAST


async def test_system_prompt_company_and_history(db: Database) -> None:
    settings = Settings(model="test:echo", system_prompt_general="Be brief.")
    chat, upto = await chat_with(
        db, "one", "two", "three", agent_identifier=AgentIdentifier.general, current_company_id="biz_42"
    )
    sent = await context.build(db, settings, load_model("test:echo", settings), chat, upto)
    assert sent[0].role == "system" and sent[0].content.startswith("Be brief.") and "biz_42" in sent[0].content
    assert [(m.role, m.content) for m in sent[1:]] == [("user", "one"), ("user", "two"), ("user", "three")]


async def test_oldest_history_is_dropped_first(db: Database) -> None:
    settings = Settings(model="test:echo", max_output_tokens=4096 - 60)
    model = load_model("test:echo", settings)  # 4,096-token window, a token per word
    words = " ".join(["w"] * 20)
    chat, upto = await chat_with(db, "oldest " + words, "middle " + words, "newest " + words)
    sent = await context.build(db, settings, model, chat, upto)
    assert [m.content.split()[0] for m in sent[1:]] == ["newest"]


async def test_text_attachments_are_inlined(db: Database, tmp_path) -> None:
    settings = Settings(model="test:echo", files_dir=str(tmp_path), max_attachment_chars=10)
    user_id = await users.create_user(db)
    text = await files.save_upload(
        db, files_dir=str(tmp_path), max_bytes=1000, user_id=user_id, filename="notes.txt",
        content_type="text/plain; charset=utf-8", data=b"0123456789abcdef",
    )  # fmt: skip
    image = await files.save_upload(
        db, files_dir=str(tmp_path), max_bytes=1000, user_id=user_id, filename="chart.png",
        content_type="image/png", data=b"\x89PNG",
    )  # fmt: skip
    data = NewChat(NewMessage("see files", file_ids=(text["id"], image["id"])))
    async with db.transaction() as tx:
        chat = await create_chat(tx, user_id, data)
    row = dict(await chats.get_chat(db, user_id, chat["id"])) | {"current_company_id": None}
    sent = await context.build(db, settings, load_model("test:echo", settings), row, LAST)
    body = sent[-1].content
    assert body.startswith("see files") and "[Attached file notes.txt]\n0123456789\n[... cut" in body
    assert "[Attached file chart.png (image/png, 4 bytes)]" in body


async def test_uploads_are_written_off_the_event_loop(db: Database, tmp_path) -> None:
    """An upload (up to 10 MB) is hashed and written in a worker thread: the loop keeps serving.
    The interpreter's own audit events say which thread opened the file (a hook cannot be
    removed, so it only looks under this test's directory)."""
    opened: list[tuple[str, threading.Thread]] = []
    watched = str(tmp_path)

    def audit(event: str, args: tuple) -> None:
        if event == "open" and str(args[0]).startswith(watched):
            opened.append((str(args[0]), threading.current_thread()))

    sys.addaudithook(audit)
    user_id = await users.create_user(db)
    record = await files.save_upload(
        db, files_dir=watched, max_bytes=11 * 2**20, user_id=user_id, filename="big.txt",
        content_type="text/plain", data=b"x" * (10 * 2**20),
    )  # fmt: skip
    assert record["size"] == 10 * 2**20
    assert (tmp_path / record["id"]).stat().st_size == 10 * 2**20
    loop_thread = threading.current_thread()
    assert opened, "the upload was not written under files_dir"
    assert all(thread is not loop_thread for _, thread in opened), opened


def test_model_specs() -> None:
    assert parse_spec("openai:gpt-4o-mini") == ("openai", "gpt-4o-mini")
    for bad in ("gpt-4o", "openai:", ":x"):
        with pytest.raises(ValueError):
            parse_spec(bad)
    with pytest.raises(ValueError, match="unknown model provider"):
        load_model("nope:x", Settings())


async def test_provider_context_windows_are_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AICHATS_OPENAI_CONTEXT_WINDOW", "1234")
    monkeypatch.setenv("AICHATS_ANTHROPIC_CONTEXT_WINDOW", "5678")
    settings = Settings()  # read from the environment, the one place settings live
    for spec, window in [("openai:any", 1234), ("anthropic:any", 5678)]:
        model = load_model(spec, settings)
        try:
            assert model.context_window == window
        finally:
            await model.close()
    model = load_model("openai:any", Settings(openai_context_window=99))
    assert model.context_window == 99
    await model.close()
