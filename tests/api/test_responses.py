"""``JSONMemo``: items' JSON kept serialised by their rows, never stale, never unbounded."""

from __future__ import annotations

from typing import Any

import orjson

from aichats.api.responses import JSONMemo


def counting(calls: list[tuple[Any, ...]]) -> Any:
    def item_json(row: tuple[Any, ...]) -> dict[str, Any]:
        calls.append(row)
        return {"id": row[0], "title": row[1], "n": row[2]}

    return item_json


def test_an_answer_is_the_items_json_as_orjson_writes_it() -> None:
    memo = JSONMemo(counting([]), 10)
    row = ("aich_1", 'Weekly \u00e9 "report"', 3)
    page = orjson.dumps({"data": [memo(row), memo(row)]})
    item = orjson.dumps({"id": "aich_1", "title": 'Weekly \u00e9 "report"', "n": 3})
    assert page == b'{"data":[' + item + b"," + item + b"]}"


def test_a_row_seen_again_is_not_built_again() -> None:
    calls: list[tuple[Any, ...]] = []
    memo = JSONMemo(counting(calls), 10)
    first = memo(("aich_1", "A", 1))
    assert memo(["aich_1", "A", 1]) is first  # any sequence of the same values: a row of another driver
    assert calls == [("aich_1", "A", 1)]


def test_a_row_changed_in_any_value_gets_its_own_answer() -> None:
    calls: list[tuple[Any, ...]] = []
    memo = JSONMemo(counting(calls), 10)
    memo(("aich_1", "A", 1))
    for changed in (("aich_1", "B", 1), ("aich_1", "A", 2), ("aich_2", "A", 1), ("aich_1", None, 1)):
        assert orjson.loads(orjson.dumps(memo(changed))) == {"id": changed[0], "title": changed[1], "n": changed[2]}
    assert len(calls) == 5


def test_it_keeps_at_most_its_size_and_lets_the_oldest_go_first() -> None:
    calls: list[tuple[Any, ...]] = []
    memo = JSONMemo(counting(calls), 3)
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
