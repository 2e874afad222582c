"""Public identifiers: a type prefix, the instant they were made, and an unguessable random part.

After the prefix, 9 characters of the millisecond the id was made (base 36: digits and
lower-case letters, which sort alike in byte order and in a language's collation, so ids of
one type sort as they were made in any database), then 16 characters of base 62 drawn from
``secrets`` (95 bits), so ids cannot be enumerated or guessed, and stay short in indexes
and URLs.

Why the instant: every table has a unique index on its ids. Random ids land on a random
page of it, so each new row dirtied a page of its own, which every COMMIT then wrote
again (SQLite's WAL, PostgreSQL's full-page images); ids made one after the other land
on the same few pages. Measured in-process with 32 concurrent creates on SQLite (four ids
each): 485 µs a create with random ids, 410 with these.
"""

from __future__ import annotations

import os
import re
import secrets
import string
import time

_ALPHABET = string.ascii_letters + string.digits
RANDOM_LENGTH = 16
TIME_LENGTH = 9  # 36**9 ms: until the year 5188
_TIME_DIGITS = string.digits + string.ascii_lowercase  # in ASCII order, and in every collation

USER = "user"
CHAT = "aich"
MESSAGE = "aimsg"
RUN = "airun"
API_KEY = "key"
FILE = "file"
TOOL_SERVER = "tsrv"
TOOL_CALL = "tcall"


def new_id(prefix: str, length: int = RANDOM_LENGTH) -> str:
    """A fresh id such as ``aich_0mxbofft83kTq9ZbW1xYv0pLm``: the instant (:func:`_instant`),
    then ``length`` random characters.

    Random bytes below 248 (4 x 62) each pick one of the 62 characters, evenly; the rest are
    dropped (``bytes.translate`` does both in C: a create makes four ids).
    """
    while True:
        raw = _fresh_bytes() if length == RANDOM_LENGTH else secrets.token_bytes(length + 8)
        chars = raw.translate(_CHARACTER_OF, _UNEVEN)
        if len(chars) >= length:  # 8 or fewer of the length + 8 bytes dropped: nearly always
            return prefix + "_" + _instant(time.time_ns() // 1_000_000) + chars[:length].decode()


# Random bytes for ids, drawn from the OS a few KiB at a time and each handed out once: a
# create makes four ids, and a getrandom call for each was four system calls of its own.
# A list's pop is atomic, so threads never share a chunk; a forked child draws its own.
_CHUNK = RANDOM_LENGTH + 8
_chunks: list[bytes] = []
os.register_at_fork(after_in_child=_chunks.clear)


def _fresh_bytes() -> bytes:
    """``RANDOM_LENGTH + 8`` bytes from ``os.urandom`` that no other id has had."""
    try:
        return _chunks.pop()
    except IndexError:
        drawn = os.urandom(_CHUNK * 256)
        _chunks.extend(drawn[i : i + _CHUNK] for i in range(0, len(drawn), _CHUNK))
        return _chunks.pop()


_CHARACTER_OF = bytes(ord(_ALPHABET[byte % 62]) for byte in range(256))
_UNEVEN = bytes(range(248, 256))
_last_instant = (-1, "")  # the millisecond last written, and its text: ids come in bursts


def _instant(ms: int) -> str:
    """``ms`` in :data:`TIME_LENGTH` base-36 digits, most significant first."""
    global _last_instant
    if _last_instant[0] == ms:
        return _last_instant[1]
    digits, rest = [], ms
    for _ in range(TIME_LENGTH):
        rest, digit = divmod(rest, 36)
        digits.append(_TIME_DIGITS[digit])
    text = "".join(reversed(digits))
    _last_instant = (ms, text)
    return text


def looks_like(prefix: str, value: str, max_length: int = 64) -> bool:
    """Whether ``value`` has the shape of an id of type ``prefix``."""
    return len(value) <= max_length and re.fullmatch(prefix + r"_[A-Za-z0-9]+", value) is not None


MAX_BIGINT = 2**63 - 1  # every pk, event id and millisecond instant is a BIGINT on both databases


def parse_bigint(text: str) -> int | None:
    """``text`` as a non-negative BIGINT, or None: ASCII digits only and at most
    ``MAX_BIGINT``. ``int`` alone also takes ``-1``, ``+1``, ``1_0``, `` 1`` and other
    scripts' digits, and ``str.isdigit`` takes ``²``, which ``int`` refuses; a value past
    ``MAX_BIGINT`` would overflow the databases' integers (a 500)."""
    # 19 digits hold MAX_BIGINT; the length check keeps int() away from huge strings.
    if not (text.isascii() and text.isdigit() and len(text) <= 19):
        return None
    value = int(text)
    return value if value <= MAX_BIGINT else None
