"""Token usage as the API shows it: exact decimal text of stored millionths of a token.

Its own module, below messages, chats and runs, which all show usage (``messages`` calls
``chats`` and ``runs``, which call neither each other nor it, so none of them can hold it
for the other two).
"""

from __future__ import annotations


def decimal_tokens(micros: int) -> str:
    """Exact decimal text of a count of millionths of a token: ``123450000`` -> ``"123.45"``."""
    whole, fraction = divmod(micros, 1_000_000)
    if not fraction:
        return str(whole)
    return f"{whole}.{fraction:06d}".rstrip("0")
