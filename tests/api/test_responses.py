"""``JSONMemo``: items' JSON kept serialised by the values they were made from, never stale,
never unbounded; and the chats' memo keyed on exactly what ``chat_json`` reads."""

from __future__ import annotations

from typing import Any

import orjson

from aichats.api.ai_chats import chat_answer
from aichats.api.responses import JSONMemo
from aichats.services.chats import CHAT_COLUMNS, CHAT_JSON_COLUMNS, chat_json


def counting(calls: list[tuple[Any, ...]]) -> Any:
    def item_json(row: tuple[Any, ...]) -> dict[str, Any]:
        calls.append(row)
        return {"id": row[0], "title": row[1], "n": row[2]}

    return item_json


def test_an_answer_is_the_items_json_as_orjson_writes_it() -> None:
    memo = JSONMemo(counting([]), tuple, 10)
    row = ("aich_1", 'Weekly \u00e9 "report"', 3)
    page = orjson.dumps({"data": [memo(row), memo(row)]})
    item = orjson.dumps({"id": "aich_1", "title": 'Weekly \u00e9 "report"', "n": 3})
    assert page == b'{"data":[' + item + b"," + item + b"]}"


def test_a_row_seen_again_is_not_built_again() -> None:
    calls: list[tuple[Any, ...]] = []
    memo = JSONMemo(counting(calls), tuple, 10)
    first = memo(("aich_1", "A", 1))
    assert memo(["aich_1", "A", 1]) is first  # any sequence of the same values: a row of another driver
    assert calls == [("aich_1", "A", 1)]


def test_a_row_changed_in_any_value_gets_its_own_answer() -> None:
    calls: list[tuple[Any, ...]] = []
    memo = JSONMemo(counting(calls), tuple, 10)
    memo(("aich_1", "A", 1))
    for changed in (("aich_1", "B", 1), ("aich_1", "A", 2), ("aich_2", "A", 1), ("aich_1", None, 1)):
        assert orjson.loads(orjson.dumps(memo(changed))) == {"id": changed[0], "title": changed[1], "n": changed[2]}
    assert len(calls) == 5


def test_it_keeps_at_most_its_size_and_lets_the_oldest_go_first() -> None:
    calls: list[tuple[Any, ...]] = []
    memo = JSONMemo(counting(calls), tuple, 3)
    for n in range(5):
        memo(("aich", "t", n))
    assert len(memo) == 3
    calls.clear()
    memo(("aich", "t", 4))
    memo(("aich", "t", 2))
    assert calls == []  # the three newest are kept
    memo(("aich", "t", 0))
    assert calls == [("aich", "t", 0)]  # the oldest went first
    assert len(memo) == 3


def test_the_chats_memo_keys_on_exactly_what_chat_json_reads() -> None:
    """Its key must hold every value chat_json reads (else a changed chat could be answered
    stale) and may hold no other (the tools list, up to 10 KB, would only weigh the memo)."""
    names = [column.key for column in CHAT_COLUMNS]
    values = [f"value of {name}" if name in ("id", "user_id", "title") else n for n, name in enumerate(names)]

    read: set[str] = set()

    class Recording(dict[str, Any]):
        def __getitem__(self, name: str) -> Any:
            read.add(name)
            return super().__getitem__(name)

    row = Recording(zip(names, values, strict=True))
    row["last_message_at"] = row["updated_at"] = row["created_at"] = 1_700_000_000_000
    chat_json(row)
    assert read == set(CHAT_JSON_COLUMNS)
    # Rows of CHAT_COLUMNS (sqlite3.Row, asyncpg.Record) are read by position: the same values.
    by_position = tuple(row[name] for name in names)
    assert chat_answer.key(by_position) == tuple(row[name] for name in CHAT_JSON_COLUMNS)
