"""Pure helpers: id, time, token and cursor formats."""

from __future__ import annotations

import os
import random
import re
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest

from aichats import clock, ids
from aichats.errors import Invalid
from aichats.services.chats import chat_json
from aichats.services.messages import decimal_tokens
from aichats.services.pagination import decode_cursor, encode_cursor


def test_ids_have_prefix_and_random_part() -> None:
    made = {ids.new_id("aich") for _ in range(1000)}
    assert len(made) == 1000
    assert all(re.fullmatch(r"aich_[0-9a-z]{9}[A-Za-z0-9]{16}", i) for i in made)
    assert ids.looks_like("user", "user_abc") and not ids.looks_like("user", "user_a-b")
    assert not ids.looks_like("user", "user_" + "a" * 64)


def _random_part(made: str) -> str:
    return made[-ids.RANDOM_LENGTH :]


def test_no_two_threads_share_an_ids_random_bytes() -> None:
    """Ids draw their random bytes from a pool refilled a few KiB at a time (``ids.py``):
    eight threads making ids at once, across many refills, never get the same bytes."""
    with ThreadPoolExecutor(8) as pool:
        made = list(pool.map(lambda _: ids.new_id("aich"), range(20_000)))
    assert len({_random_part(m) for m in made}) == len(made)


def test_a_forked_child_makes_random_parts_of_its_own() -> None:
    """A child forked while the pool holds bytes must not hand out the parent's."""
    ids.new_id("aich")  # the pool now holds bytes the parent has not used
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its ids to the parent, then out without pytest's exit handlers
        os.write(writer, " ".join(_random_part(ids.new_id("aich")) for _ in range(50)).encode())
        os._exit(0)
    os.close(writer)
    os.waitpid(pid, 0)
    with os.fdopen(reader) as pipe:
        child = set(pipe.read().split())
    parent = {_random_part(ids.new_id("aich")) for _ in range(50)}
    assert len(child) == 50 and not child & parent


def test_id_characters_are_even() -> None:
    """Each of the 62 characters as likely as any other (a byte's value modulo 62, with the
    bytes that would favour some dropped): over 124,000 characters, each within 12% of 2,000."""
    counts = Counter("".join(ids.new_id("x")[-ids.RANDOM_LENGTH :] for _ in range(7_750)))
    assert len(counts) == 62
    assert all(1_760 <= count <= 2_240 for count in counts.values()), counts


def test_ids_sort_as_they_were_made() -> None:
    """The instant after the prefix: ids of one type made one after the other sort in that
    order (a unique index on them gets its new keys side by side, ``ids.py``)."""
    made = []
    for _ in range(3):
        made.append(ids.new_id("aich"))
        time.sleep(0.002)
    assert sorted(made) == made
    edges = [0, 35, 36, 36**ids.TIME_LENGTH - 1]
    instants = [*random.Random(1).sample(range(36**ids.TIME_LENGTH), 5_000), *edges]
    texts = {ms: ids._instant(ms) for ms in instants}
    assert all(len(text) == ids.TIME_LENGTH for text in texts.values())
    assert sorted(texts.values()) == [texts[ms] for ms in sorted(instants)]
    assert ids._instant(0) == "000000000" and ids._instant(36**ids.TIME_LENGTH - 1) == "zzzzzzzzz"
    assert sorted(texts.values(), key=str.casefold) == sorted(texts.values())  # a collation that folds case agrees


@pytest.mark.parametrize(
    "ms, text",
    [
        (0, "1970-01-01T00:00:00.000Z"),
        (1701406800401, "2023-12-01T05:00:00.401Z"),
        (1701406800009, "2023-12-01T05:00:00.009Z"),
        (951868799999, "2000-02-29T23:59:59.999Z"),  # the last instant of a leap day
        (951868800000, "2000-03-01T00:00:00.000Z"),
        (-1, "1969-12-31T23:59:59.999Z"),
    ],
)
def test_isoformat_ms(ms: int, text: str) -> None:
    assert clock.isoformat_ms(ms) == text
    assert clock.parse_iso(text) == ms


def test_isoformat_ms_agrees_with_datetime_everywhere() -> None:
    """The text is assembled from a cached day and tables (clock.py): every field, across
    two centuries of random instants, is what datetime writes."""
    rng = random.Random(11)
    for ms in [rng.randrange(0, 4_102_444_800_000) for _ in range(20_000)]:
        expected = datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}Z"
        assert clock.isoformat_ms(ms) == expected


def test_parse_iso_takes_offsets_and_naive_utc() -> None:
    assert clock.parse_iso("2023-12-01T06:00:00.401+01:00") == 1701406800401
    assert clock.parse_iso("2023-12-01T05:00:00.401") == 1701406800401


def test_clock_can_be_replaced() -> None:
    clock.set_clock(lambda: 42)
    try:
        assert clock.now_ms() == 42
    finally:
        clock.set_clock(None)
    assert clock.now_ms() > 1_700_000_000_000


@pytest.mark.parametrize(
    "micros, text",
    [(0, "0"), (1, "0.000001"), (123_450_000, "123.45"), (1_000_000, "1"), (10**15 + 500_000, "1000000000.5")],
)
def test_decimal_tokens_are_exact(micros: int, text: str) -> None:
    assert decimal_tokens(micros) == text


def test_cursor_round_trip_and_rejection() -> None:
    cursor = encode_cursor("a", (1700000000000, 42))
    assert decode_cursor("a", cursor, 2, name="after") == (1700000000000, 42)
    with pytest.raises(Invalid, match="after"):
        decode_cursor("c", cursor, 1, name="after")
    with pytest.raises(Invalid, match="before"):
        decode_cursor("a", "%%%", 2, name="before")


@pytest.mark.parametrize(
    "created, updated, last",
    [
        (1701406800401, 1701406800401, 1701406800401),  # a new chat
        (1701406800401, 1701406900002, 1701406900002),  # a message since
        (1701406800401, 1701407000000, 1701406900002),  # renamed since its last message
        (1701406800401, 1701406800401, None),  # no message
    ],
)
def test_a_chats_instants_are_each_its_own(created: int, updated: int, last: int | None) -> None:
    """``chat_json`` formats an instant once when it repeats: each field is still its own."""
    row = {
        "id": "aich_x", "title": None, "notification_preference": "all", "agent_identifier": "support",
        "message_count": 1, "blended_token_usage_micros": 0, "created_at": created, "updated_at": updated,
        "last_message_at": last, "user_id": "user_x",
    }  # fmt: skip
    shown = chat_json(row)
    assert shown["created_at"] == clock.isoformat_ms(created)
    assert shown["updated_at"] == clock.isoformat_ms(updated)
    assert shown["last_message_at"] == (None if last is None else clock.isoformat_ms(last))
