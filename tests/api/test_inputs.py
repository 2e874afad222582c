"""Query strings read as Starlette reads them, parsed once per distinct string."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from aichats.api import inputs
from aichats.api.inputs import query_value

NAMES = ("first", "after", "q", "a b", "é", "x", "missing")


def request_for(query_string: bytes) -> Request:
    return Request({"type": "http", "method": "GET", "path": "/", "query_string": query_string, "headers": []})


@pytest.mark.parametrize(
    "query_string",
    [
        b"",
        b"first=20",
        b"first=20&first=50",  # the last one wins
        b"first=&after=abc",  # a blank value is kept (as "")
        b"first",  # a name without "=" is a blank value
        b"q=a+b%20c&a+b=1",  # "+" and %20 are spaces, in names too
        b"%C3%A9=caf%C3%A9&x=%FF",  # UTF-8, and a byte that is not: the replacement character
        b"x=1;q=2",  # ";" separates nothing
        b"&&first=3&",
        "é=1".encode("latin-1"),  # a raw non-ASCII byte, read as Latin-1
    ],
)
def test_query_values_are_starlettes(query_string: bytes) -> None:
    for name in NAMES:
        assert query_value(request_for(query_string), name) == request_for(query_string).query_params.get(name)


def test_a_query_string_is_parsed_once() -> None:
    first = request_for(b"first=7&after=c1")
    again = request_for(b"first=7&after=c1")
    assert query_value(first, "first") == "7" and query_value(again, "after") == "c1"
    hits = inputs._parameters.cache_info().hits
    query_value(again, "first")
    assert inputs._parameters.cache_info().hits == hits + 1
