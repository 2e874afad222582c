"""Drive one published whop-sdk client through one scenario against a live aichats server.

``test_published_clients.py`` runs this in a subprocess whose PYTHONPATH holds one client
(both import as ``whop_sdk``)::

    drive.py CLIENT SCENARIO      # CLIENT: v0 | v2; SCENARIO: a name in SCENARIOS

The environment names the server and the accounts prepared by the test:
``AICHATS_E2E_BASE_URL`` (ends in ``/api/v1``) and ``AICHATS_E2E_ACCOUNTS``, JSON
``{"main": {"user_id": "user_...", "key": "..."}, ...}``. The exit status is 0 when every
check holds; otherwise 1, with the failed check and its traceback on stderr.
"""

from __future__ import annotations

import json
import os
import re
import sys
import traceback
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sdks import Sdk, load

CHAT_ID = re.compile(r"aich_[A-Za-z0-9]+")
WIRE_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")
FIELDS = (
    "id",
    "title",
    "notification_preference",
    "message_count",
    "blended_token_usage",
    "created_at",
    "updated_at",
    "last_message_at",
)
CLOCK_SLACK = timedelta(seconds=60)


# ------------------------------------------------------------------------- helpers


@dataclass
class Context:
    sdk_class: type[Sdk]
    base_url: str
    accounts: dict[str, dict[str, str]]

    def connect(self, account: str) -> Sdk:
        return self.sdk_class(self.base_url, self.accounts[account]["key"])

    def user_id(self, account: str) -> str:
        return self.accounts[account]["user_id"]


def snapshot(sdk: Sdk, chat: Any) -> dict[str, Any]:
    """A chat's fields as comparable values (the same for a chat and a list item)."""
    return {
        **{name: getattr(chat, name) for name in FIELDS},
        "user": chat.user.id,
        "agent_identifier": sdk.agent_of(chat),
    }


def ids(chats: Iterable[Any]) -> list[str]:
    """Drain a list result (the client fetches every page) into its ids."""
    return [chat.id for chat in chats]


def check_utc(value: Any, what: str) -> None:
    assert isinstance(value, datetime), f"{what} is {value!r}, not a datetime"
    assert value.utcoffset() == timedelta(0), f"{what} is {value!r}, not UTC"
    now = datetime.now(UTC)
    assert now - CLOCK_SLACK < value < now + CLOCK_SLACK, f"{what} is {value}, far from now ({now})"


def check_chat(
    sdk: Sdk,
    chat: Any,
    *,
    user_id: str,
    title: str | None,
    agent: str = "support",
    notification: str = "all",
) -> None:
    """Every field of a chat that was just created and holds only its first message."""
    assert isinstance(chat.id, str) and CHAT_ID.fullmatch(chat.id), f"id {chat.id!r} is not aich_..."
    assert chat.title == title, f"title {chat.title!r}, expected {title!r}"
    assert chat.notification_preference == notification, f"notification_preference {chat.notification_preference!r}"
    assert sdk.agent_of(chat) == agent, f"agent_identifier {sdk.agent_of(chat)!r}, expected {agent!r}"
    assert type(chat.message_count) is int and chat.message_count == 1, f"message_count {chat.message_count!r}"
    assert chat.blended_token_usage == "0" and isinstance(chat.blended_token_usage, str), (
        f"blended_token_usage {chat.blended_token_usage!r}, expected the string '0'"
    )
    for name in ("created_at", "updated_at", "last_message_at"):
        check_utc(getattr(chat, name), name)
    assert chat.updated_at == chat.created_at, f"updated_at {chat.updated_at} != created_at {chat.created_at}"
    assert chat.last_message_at == chat.created_at, "the first message is sent when the chat is created"
    assert chat.user.id == user_id, f"user.id {chat.user.id!r}, expected {user_id!r}"


def check_wire(body: Any, chat: Any) -> None:
    """The raw JSON of a chat: every documented field, datetimes as 2023-12-01T05:00:00.401Z."""
    expected = {*FIELDS, "agent_identifier", "user"}
    assert isinstance(body, dict) and set(body) == expected, (
        f"raw chat fields {sorted(body)}, expected {sorted(expected)}"
    )
    for name in ("created_at", "updated_at", "last_message_at"):
        assert WIRE_DATETIME.fullmatch(body[name]), f"raw {name} {body[name]!r} is not ISO 8601 UTC with milliseconds"
    assert body["id"] == chat.id and body["user"] == {"id": chat.user.id}


def expect_error(sdk: Sdk, status: int, error_type: str, call: Callable[[], Any], what: str) -> str:
    """Run ``call``; it must raise this client's typed error for ``status``. Returns the message."""
    try:
        result = call()
    except sdk.status_error as error:
        expected = sdk.errors[status]
        assert type(error) is expected, f"{what}: raised {type(error).__name__} {error}, expected {expected.__name__}"
        assert error.status_code == status, f"{what}: status {error.status_code}, expected {status}"  # type: ignore[attr-defined]
        body = error.body  # type: ignore[attr-defined]
        assert isinstance(body, dict) and set(body) == {"error"}, f"{what}: error body {body!r}"
        assert set(body["error"]) == {"type", "message"}, f"{what}: error body {body!r}"
        assert body["error"]["type"] == error_type, (
            f"{what}: error type {body['error']['type']!r}, expected {error_type!r}"
        )
        message = body["error"]["message"]
        assert isinstance(message, str) and message.strip(), f"{what}: empty error message in {body!r}"
        return message
    raise AssertionError(f"{what}: expected {status} {error_type}, got {result!r}")


# ----------------------------------------------------------------------- scenarios


def crud(ctx: Context) -> None:
    """Create, retrieve, update, list and delete, checking every field on the way."""
    sdk, user_id = ctx.connect("main"), ctx.user_id("main")

    raw = sdk.create_raw(
        message_text="Summarise last week's revenue",
        title="Weekly Revenue Analysis",
        company_id="biz_XXXXX",
        message_source="manual",
    )
    assert raw.status == 201, f"create answered {raw.status}"
    chat = raw.chat
    check_chat(sdk, chat, user_id=user_id, title="Weekly Revenue Analysis")
    check_wire(raw.json, chat)
    assert raw.json["agent_identifier"] == "support", "agent_identifier defaults to support"
    created = snapshot(sdk, chat)

    general = sdk.create(
        message_text="What's new?",
        agent_identifier="general",
        message_source="suggestion",
        suggestion_type="whats_new",
        message_attachments=[{"id": ctx.accounts["main"]["file_id"]}],
    )
    check_chat(sdk, general, user_id=user_id, title=None, agent="general")
    assert general.id != chat.id

    got = sdk.retrieve(chat.id)
    assert snapshot(sdk, got) == created, f"retrieve {snapshot(sdk, got)} != create {created}"

    renamed = sdk.update(chat.id, title="Renamed", notification_preference="none")
    assert (renamed.title, renamed.notification_preference) == ("Renamed", "none"), snapshot(sdk, renamed)
    assert renamed.updated_at >= chat.updated_at, f"updated_at went back: {renamed.updated_at} < {chat.updated_at}"
    unchanged = {k: v for k, v in created.items() if k not in ("title", "notification_preference", "updated_at")}
    assert {k: v for k, v in snapshot(sdk, renamed).items() if k in unchanged} == unchanged, snapshot(sdk, renamed)
    assert snapshot(sdk, sdk.retrieve(chat.id)) == snapshot(sdk, renamed), "retrieve after update"

    cleared = sdk.update(chat.id, title=None)
    assert cleared.title is None, f"title=None should clear it, got {cleared.title!r}"
    assert cleared.notification_preference == "none", "an omitted field must stay as it was"
    assert sdk.retrieve(chat.id).title is None

    nothing = sdk.update(chat.id)
    assert snapshot(sdk, nothing) == snapshot(sdk, cleared), "an empty update changes nothing"

    back = sdk.update(chat.id, notification_preference="all", company_id="biz_YYYYY")
    assert (back.title, back.notification_preference) == (None, "all"), snapshot(sdk, back)

    listed = list(sdk.list())
    assert ids(listed) == [general.id, chat.id], f"list {ids(listed)}, expected newest first"
    assert snapshot(sdk, listed[0]) == snapshot(sdk, general), "list item != created general chat"
    assert snapshot(sdk, listed[1]) == snapshot(sdk, sdk.retrieve(chat.id)), "list item != retrieved chat"

    deleted = sdk.delete(chat.id)
    assert deleted is True, f"delete returned {deleted!r}, expected True"
    expect_error(sdk, 404, "not_found", lambda: sdk.retrieve(chat.id), "retrieve a deleted chat")
    expect_error(sdk, 404, "not_found", lambda: sdk.update(chat.id, title="x"), "update a deleted chat")
    expect_error(sdk, 404, "not_found", lambda: sdk.delete(chat.id), "delete a deleted chat")
    assert ids(sdk.list()) == [general.id], "a deleted chat leaves the list"


def pagination(ctx: Context) -> None:
    """Auto-pagination over four pages, and a stable order while chats change mid-walk."""
    sdk = ctx.connect("main")
    created = [sdk.create(message_text=f"chat {i}", title=f"chat {i:02d}").id for i in range(25)]
    newest_first = created[::-1]

    # Page by page; the v0 client fetches one more (empty) page after the last: ignore empties.
    pages = [(page, has_next) for page, has_next in sdk.pages(first=7) if page]
    assert [len(page) for page, _ in pages] == [7, 7, 7, 4], f"page sizes {[len(p) for p, _ in pages]}"
    assert [chat_id for page, _ in pages for chat_id in page] == newest_first, "pages out of order"
    assert [has_next for _, has_next in pages] == [True, True, True, False], f"has_next_page {[h for _, h in pages]}"

    walked = ids(sdk.list(first=7))
    assert walked == newest_first, f"auto-pagination yielded {walked}, expected {newest_first}"
    assert ids(sdk.list()) == newest_first, "default page size (20): two pages"

    # Walk again, writing while the walk is on its first page.
    ahead, behind, doomed = newest_first[20], newest_first[1], newest_first[10]
    walked, titles, newcomer = [], {}, None
    for item in sdk.list(first=7):
        walked.append(item.id)
        titles[item.id] = item.title
        if len(walked) == 3:
            sdk.update(ahead, title="renamed mid-walk")  # on a page not fetched yet
            sdk.update(behind, title="renamed after it was seen")
            sdk.delete(doomed)  # not reached yet: must not be yielded
            newcomer = sdk.create(message_text="arrived mid-walk").id  # newer than the cursor
    expected = [chat_id for chat_id in newest_first if chat_id != doomed]
    assert walked == expected, f"walk with writes yielded {walked}, expected {expected}"
    assert titles[ahead] == "renamed mid-walk", f"a later page shows the new title, got {titles[ahead]!r}"
    assert titles[behind] == "chat 23", f"an earlier page was read before the change, got {titles[behind]!r}"
    assert ids(sdk.list(first=7)) == [newcomer, *expected], "a fresh walk sees the new chat first, once"


def filters(ctx: Context) -> None:
    """The agent_identifier and only_active_crons filters, alone, together and across pages."""
    sdk = ctx.connect("main")
    agents = ["support", "general", "support", "general", "support"]
    chats = []
    for i, agent in enumerate(agents):
        fields = {"agent_identifier": agent} if agent == "general" else {}  # support is the default
        chats.append(sdk.create(message_text=f"filter {i}", **fields))
    assert [sdk.agent_of(chat) for chat in chats] == agents, "agent_identifier as created"
    newest_first = chats[::-1]
    everything = [chat.id for chat in newest_first]
    by_agent = {a: [chat.id for chat in newest_first if sdk.agent_of(chat) == a] for a in ("general", "support")}

    for agent, expected in by_agent.items():
        items = list(sdk.list(agent_identifier=agent))
        assert ids(items) == expected, f"agent_identifier={agent}: {ids(items)}, expected {expected}"
        assert {sdk.agent_of(item) for item in items} == {agent}
        paged = ids(sdk.list(agent_identifier=agent, first=1))
        assert paged == expected, f"agent_identifier={agent}, first=1 (filter kept across pages): {paged}"

    assert ids(sdk.list(only_active_crons=True)) == [], "no chat has a schedule yet"
    assert ids(sdk.list(only_active_crons=True, first=1)) == []
    assert ids(sdk.list(only_active_crons=False)) == everything, "only_active_crons=false filters nothing"
    assert ids(sdk.list(only_active_crons=False, agent_identifier="general")) == by_agent["general"]
    assert ids(sdk.list(only_active_crons=True, agent_identifier="general")) == []
    assert ids(sdk.list()) == everything


def errors(ctx: Context) -> None:
    """401, 403, 404 (users are isolated) and 422, each as the client's typed exception."""
    owner, reader, creator, other = (ctx.connect(a) for a in ("main", "reader", "creator", "other"))
    chat = owner.create(message_text="private", title="A's chat")
    before = snapshot(owner, chat)

    def writes(sdk: Sdk) -> dict[str, Callable[[], Any]]:
        return {
            "create": lambda: sdk.create(message_text="hello"),
            "update": lambda: sdk.update(chat.id, title="taken over", notification_preference="none"),
            "delete": lambda: sdk.delete(chat.id),
        }

    def reads(sdk: Sdk) -> dict[str, Callable[[], Any]]:
        return {"retrieve": lambda: sdk.retrieve(chat.id), "list": lambda: list(sdk.list())}

    # 401: an unknown key.
    stranger = ctx.sdk_class(ctx.base_url, "not-a-real-key")
    for name, call in {**reads(stranger), **writes(stranger)}.items():
        expect_error(stranger, 401, "unauthorized", call, f"{name} with an unknown key")

    # 403: the owner's read-only key reads but may not write.
    assert snapshot(reader, reader.retrieve(chat.id)) == before
    assert ids(reader.list()) == [chat.id]
    for name, call in writes(reader).items():
        message = expect_error(reader, 403, "forbidden", call, f"{name} with a read-only key")
        assert f"ai_chat:{name}" in message, f"{name}: the message should name the missing permission: {message!r}"

    # 403: a create-only key creates (for its user) but may not read.
    made = creator.create(message_text="made by a create-only key")
    check_chat(creator, made, user_id=ctx.user_id("main"), title=None)
    for name, call in reads(creator).items():
        message = expect_error(creator, 403, "forbidden", call, f"{name} with a create-only key")
        assert "ai_chat:read" in message, message

    # 404: another user can neither see nor touch A's chat, and A cannot see B's.
    assert ids(other.list()) == [], "user B sees none of A's chats"
    calls = {**reads(other), **writes(other)}
    for name in ("retrieve", "update", "delete"):
        expect_error(other, 404, "not_found", calls[name], f"user B: {name} A's chat")
    theirs = other.create(message_text="B's own")
    assert ids(other.list()) == [theirs.id], "user B lists only B's chats"
    expect_error(owner, 404, "not_found", lambda: owner.retrieve(theirs.id), "user A: retrieve B's chat")
    expect_error(owner, 404, "not_found", lambda: owner.retrieve("aich_doesnotexist0000"), "an unknown id")

    # 422: invalid input, with a message naming the field.
    invalid: list[tuple[str, Callable[[], Any]]] = [
        ("message_text", lambda: owner.create(message_text="")),
        ("message_text", lambda: owner.create(message_text="   ")),
        ("agent_identifier", lambda: owner.create(message_text="hi", agent_identifier="bogus")),
        ("suggestion_type", lambda: owner.create(message_text="hi", message_source="manual", suggestion_type="x")),
        ("message_source", lambda: owner.create(message_text="hi", message_source="carrier_pigeon")),
        ("message_attachments", lambda: owner.create(message_text="hi", message_attachments=[{"id": "not_a_file"}])),
        ("notification_preference", lambda: owner.update(chat.id, notification_preference="sometimes")),
        ("title", lambda: owner.update(chat.id, title="")),
        ("first", lambda: list(owner.list(first=0))),
        ("first", lambda: list(owner.list(first=101))),
        ("agent_identifier", lambda: list(owner.list(agent_identifier="bogus"))),
        ("after", lambda: list(owner.list(after="not-a-cursor"))),
    ]
    for field, call in invalid:
        message = expect_error(owner, 422, "invalid_request", call, f"invalid {field}")
        assert field in message, f"the 422 message should name {field!r}: {message!r}"

    # Nothing above changed A's data.
    assert snapshot(owner, owner.retrieve(chat.id)) == before, "refused calls must change nothing"
    assert ids(owner.list()) == [made.id, chat.id]


def idempotency(ctx: Context) -> None:
    """A retried create with the same Idempotency-Key replays the first answer."""
    sdk, other = ctx.connect("main"), ctx.connect("other")
    key = f"e2e-{uuid.uuid4()}"
    body = {"message_text": "Summarise last week's revenue", "title": "Once only", "company_id": "biz_XXXXX"}

    first = sdk.create_raw(headers={"Idempotency-Key": key}, **body)
    assert first.status == 201 and first.header("Idempotent-Replayed") is None, (first.status, first.headers)
    check_chat(sdk, first.chat, user_id=ctx.user_id("main"), title="Once only")

    again = sdk.create_raw(headers={"Idempotency-Key": key}, **body)
    assert again.status == 201, f"replay answered {again.status}"
    assert again.header("Idempotent-Replayed") == "true", f"replay headers {again.headers}"
    assert again.json == first.json, f"replayed body {again.json} != first {first.json}"
    assert snapshot(sdk, again.chat) == snapshot(sdk, first.chat)
    assert ids(sdk.list()) == [first.chat.id], "a replay creates nothing"

    message = expect_error(
        sdk,
        422,
        "invalid_request",
        lambda: sdk.create(headers={"Idempotency-Key": key}, **{**body, "message_text": "something else"}),
        "same Idempotency-Key, different body",
    )
    assert "Idempotency-Key" in message, message
    assert ids(sdk.list()) == [first.chat.id], "a refused reuse creates nothing"

    # Keys belong to the API key that sent them: another user's same key is unrelated.
    theirs = other.create_raw(headers={"Idempotency-Key": key}, **body)
    assert theirs.status == 201 and theirs.header("Idempotent-Replayed") is None
    assert theirs.chat.id != first.chat.id and theirs.chat.user.id == ctx.user_id("other")

    fresh = sdk.create(headers={"Idempotency-Key": f"e2e-{uuid.uuid4()}"}, **body)
    assert fresh.id != first.chat.id, "a new key creates a new chat"
    assert ids(sdk.list()) == [fresh.id, first.chat.id]


SCENARIOS: dict[str, Callable[[Context], None]] = {
    f.__name__: f for f in (crud, pagination, filters, errors, idempotency)
}


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[2] not in SCENARIOS:
        print(f"usage: {argv[0]} v0|v2 {'|'.join(SCENARIOS)}", file=sys.stderr)
        return 2
    client, scenario = argv[1], argv[2]
    ctx = Context(load(client), os.environ["AICHATS_E2E_BASE_URL"], json.loads(os.environ["AICHATS_E2E_ACCOUNTS"]))
    try:
        SCENARIOS[scenario](ctx)
    except Exception as error:
        traceback.print_exc()
        print(f"\nFAILED [{client}] {scenario}: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    print(f"ok [{client}] {scenario}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
