"""What one agent turn sends its model: instructions, then as much history as fits.

The system prompt of the chat's agent comes first, with the chat's company or account.
Then the conversation up to the user message being answered, newest kept, oldest
dropped first when the model's context window (less the reply's budget) is full. Text
attachments are inlined into their message (cut at ``AICHATS_MAX_ATTACHMENT_CHARS``);
other files are named, not read.
"""

from __future__ import annotations

import orjson

from aichats.agent.models import ChatMessage, Model
from aichats.config import Settings
from aichats.services import files, messages
from aichats.storage.database import Database, Row

HISTORY_LIMIT = 200  # messages read per turn, before trimming to the window


def system_prompt(settings: Settings, chat: Row) -> str:
    prompt = settings.system_prompt_for(chat["agent_identifier"])
    if chat["current_company_id"]:
        prompt += f"\n\nThe user is working in the context of the company or account {chat['current_company_id']}."
    return prompt


def _with_attachments(
    settings: Settings, row: messages.HistoryRow, attached: list[str], owned: dict[str, files.FileRow]
) -> str:
    text: str = row["content"]
    for file_id in attached:
        record = owned.get(file_id)
        if record is None:  # deleted since it was attached
            continue
        body = files.read_text(settings.files_dir, record, settings.max_attachment_chars)
        if body is None:
            text += f"\n\n[Attached file {record['filename']} ({record['content_type']}, {record['size']} bytes)]"
        else:
            text += f"\n\n[Attached file {record['filename']}]\n{body}"
    return text


async def build(
    db: Database, settings: Settings, model: Model, chat: Row, reply_pk: int, *, reserved: int = 0
) -> list[ChatMessage]:
    """The prompt for the reply ``reply_pk``: everything completed before it in the chat,
    in the window less ``reserved`` tokens (the tools offered with it)."""
    system = ChatMessage("system", system_prompt(settings, chat))
    budget = model.context_window - settings.max_output_tokens - await model.count_tokens(system.content) - 16
    budget -= reserved
    history = await messages.history(db, chat["pk"], reply_pk, HISTORY_LIMIT)
    # Every attachment of the history, read in one query (not one per file).
    attached = [[attachment["id"] for attachment in orjson.loads(row["attachments"])] for row in history]
    owned = await files.owned_files(db, chat["user_id"], list({i: None for ids in attached for i in ids}))
    kept: list[ChatMessage] = []
    for row, ids in zip(history, attached, strict=True):
        content = _with_attachments(settings, row, ids, owned)
        cost = await model.count_tokens(content) + 8  # role markers
        if cost > budget:
            if not kept:  # the message being answered must go in, cut to what fits
                kept.append(ChatMessage(row["role"], await _cut_to(model, content, budget - 8)))
            break
        budget -= cost
        kept.append(ChatMessage(row["role"], content))
    return [system, *reversed(kept)]


async def _cut_to(model: Model, text: str, tokens: int) -> str:
    """The start of ``text`` that takes at most ``tokens`` (by the model's own count)."""
    tokens = max(tokens, 1)
    while len(text) > 1 and (cost := await model.count_tokens(text)) > tokens:
        text = text[: max(1, int(len(text) * tokens / cost * 0.95))]
    return text
