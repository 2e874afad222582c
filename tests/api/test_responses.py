"""``JSONMemo``: items' JSON kept serialised by a key that changes with them, never stale,
never unbounded; and the chats' memo keyed by a row version that moves whenever anything
``chat_json`` reads changes."""

from __future__ import annotations

import importlib
from typing import Any

import orjson
import pytest
from starlette.responses import Response

from aichats.api.ai_chats import chat_answers
from aichats.api.app import AppState, create_app
from aichats.api.responses import JSONBytes, JSONMemo
from aichats.config import Settings
from aichats.services.chats import CHAT_ANSWER_COLUMNS, CHAT_JSON_COLUMNS, chat_json


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


def test_known_answers_are_all_or_nothing() -> None:
    calls: list[tuple[Any, ...]] = []
    memo = JSONMemo(counting(calls), tuple, 10)
    first, second = memo(("aich_1", "A", 1)), memo(("aich_2", "B", 2))
    assert memo.known([("aich_2", "B", 2), ("aich_1", "A", 1)]) == [second, first]
    assert memo.known([("aich_1", "A", 1), ("aich_1", "A", 2)]) is None  # one not kept: none
    assert memo.known([]) == []
    assert len(calls) == 2


def test_the_row_version_moves_with_exactly_what_chat_json_reads() -> None:
    """The chats' memo keys on (pk, row_version): exact only if the row version moves whenever
    a value chat_json reads changes. Migration 0010's trigger watches those columns: it must
    watch exactly what chat_json reads (more would only empty the memo for nothing)."""
    names = [column.key for column in CHAT_ANSWER_COLUMNS]
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
    migration = importlib.import_module("aichats.storage.migrations.versions.0010_chat_row_version")
    assert set(migration._SHOWN) == set(CHAT_JSON_COLUMNS)
    # Rows of CHAT_ANSWER_COLUMNS (sqlite3.Row, asyncpg.Record) are read by position.
    by_position = tuple(row[name] for name in names)
    assert chat_answers().key(by_position) == (row["pk"], row["row_version"])


def test_a_json_answer_is_starlettes_response_with_its_two_headers() -> None:
    """``JSONBytes`` writes its headers itself: the same as ``Response`` would, for every
    status an API answer has."""
    for status in (200, 201, 400, 404, 429, 500):
        for body in (b"true", orjson.dumps({"title": "caf\u00e9 \u2615"})):
            ours, theirs = JSONBytes(body, status), Response(body, status, media_type="application/json")
            shown = (ours.status_code, ours.body, ours.raw_headers)
            assert shown == (theirs.status_code, theirs.body, theirs.raw_headers)
            assert ours.background is None


def test_the_apps_state_is_read_as_plain_attributes() -> None:
    """``app.state``'s values live in Starlette's dict and in the object itself (read
    without ``State.__getattr__``): setting, replacing and deleting keep the two the same."""
    state = create_app(Settings(database_url="sqlite:///unused.db")).state
    assert isinstance(state, AppState)
    state.thing = 1
    state["other"] = 2
    state.thing = 3
    assert vars(state)["thing"] == state._state["thing"] == state.thing == 3
    assert vars(state)["other"] == state._state["other"] == state["other"] == 2
    del state.thing
    del state["other"]
    assert "thing" not in vars(state) and "thing" not in state._state and "other" not in vars(state)
    with pytest.raises(AttributeError):
        _ = state.thing
