"""Daily token budgets: what each user's replies used today, and whether they may start another turn.

Usage is counted where replies are accounted: :func:`add_usage` runs in the transaction
that adds a reply's blended tokens to its chat (:func:`aichats.services.chats.add_usage`,
for completed, failed and cancelled replies alike), into one row per user and UTC day.

A user's budget is their own (``aichats users budget``: a number of tokens, or no limit)
or else ``AICHATS_TOKEN_BUDGET_PER_DAY`` (unset: no limit). A user whose usage today has
reached their budget is over it until the next UTC midnight: the API refuses their new
turns (:class:`Budgets`), and the scheduling pass skips their scheduled runs
(:func:`over_budget`, for a batch of users at once). A turn already under way always
finishes: its tokens are known only once it does, so a day's usage can pass the budget
by what the last turns used, and the next turn is then refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from aichats.clock import isoformat_ms, now_ms
from aichats.errors import NotFound, TokenBudgetExceeded
from aichats.services.sql import json_texts
from aichats.services.usage import decimal_tokens
from aichats.services.users import user_exists
from aichats.storage.database import Connection, Database
from aichats.storage.schema import token_budgets, token_usage

DAY_MS = 86_400_000
MICROS = 1_000_000  # usage is stored in millionths of a token (see schema.py)
BUDGETS_CHANNEL = "aichats_budgets"  # a user's budget changed: its payload is the user's id

_u = token_usage.c
_b = token_budgets.c


def day_of(at_ms: int) -> int:
    """The UTC day of an instant, as days since the Unix epoch."""
    return at_ms // DAY_MS


def resets_at(at_ms: int) -> int:
    """The next UTC midnight after ``at_ms``: when the day's usage starts again from 0."""
    return (day_of(at_ms) + 1) * DAY_MS


# ------------------------------------------------------------ counting

_INSERT = postgresql.insert(token_usage).values(
    user_id=sa.bindparam("user_id"), day=sa.bindparam("day"), blended_tokens_micros=sa.bindparam("micros")
)
_ADD = _INSERT.on_conflict_do_update(
    index_elements=[_u.user_id, _u.day],
    set_={"blended_tokens_micros": _u.blended_tokens_micros + _INSERT.excluded.blended_tokens_micros},
)


async def add_usage(tx: Connection, user_id: str, blended_tokens_micros: int, now: int) -> None:
    """Add a reply's blended tokens to its user's usage of the day of ``now``, in ``tx``."""
    if blended_tokens_micros > 0:
        await tx.execute(_ADD, {"user_id": user_id, "day": day_of(now), "micros": blended_tokens_micros})


# ------------------------------------------------------------ standing


@dataclass(frozen=True, slots=True)
class Standing:
    """A user's day so far: blended tokens used (in millionths) and the budget that applies
    (tokens per day; None: no limit)."""

    user_id: str
    used_micros: int
    budget: int | None

    @property
    def over(self) -> bool:
        return self.budget is not None and self.used_micros >= self.budget * MICROS

    @property
    def remaining_micros(self) -> int | None:
        return None if self.budget is None else max(self.budget * MICROS - self.used_micros, 0)


_users = json_texts("user_ids").subquery()
# Each user of the list with their usage of the day and their own budget, if any (a row
# with NULL tokens: no limit; no row: the operator's default).
_STANDINGS = sa.select(
    _users.c.value.label("user_id"),
    _u.blended_tokens_micros,
    _b.pk.label("budget_pk"),
    _b.tokens_per_day,
).select_from(
    _users.outerjoin(token_usage, sa.and_(_u.user_id == _users.c.value, _u.day == sa.bindparam("day"))).outerjoin(
        token_budgets, _b.user_id == _users.c.value
    )
)


async def standings(
    db: Database | Connection, user_ids: list[str], *, now: int, default: int | None
) -> dict[str, Standing]:
    """Each user's :class:`Standing` on the day of ``now`` (one statement however many users);
    ``default``: ``AICHATS_TOKEN_BUDGET_PER_DAY``."""
    if not user_ids:
        return {}
    params = {"user_ids": orjson.dumps(list(dict.fromkeys(user_ids))).decode(), "day": day_of(now)}
    found = {}
    for row in await db.fetch_all(_STANDINGS, params):
        budget = row["tokens_per_day"] if row["budget_pk"] is not None else default
        found[row["user_id"]] = Standing(row["user_id"], int(row["blended_tokens_micros"] or 0), budget)
    return found


async def over_budget(db: Database | Connection, user_ids: list[str], *, now: int, default: int | None) -> set[str]:
    """Which of ``user_ids`` have used their budget of the day of ``now``: for a scheduling
    pass, whose due schedules of those users are skipped (one statement for the batch)."""
    return {
        user for user, standing in (await standings(db, user_ids, now=now, default=default)).items() if standing.over
    }


def skipped_run_notice(now: int) -> str:
    """What the notification of a scheduled run skipped for the budget says (the body of
    :func:`aichats.services.notifications.schedule_skipped`)."""
    return (
        "A scheduled run was skipped: your daily token budget is used up. "
        f"Scheduled runs start again after it resets at {isoformat_ms(resets_at(now))}."
    )


def exceeded(standing: Standing, now: int) -> TokenBudgetExceeded:
    """The 429 a turn of a user over budget gets: how much, and when it resets (``Retry-After``)."""
    reset = resets_at(now)
    wait = max(math.ceil((reset - now) / 1000), 1)
    message = (
        f"The daily token budget of {standing.budget:,} blended tokens is used up "
        f"({decimal_tokens(standing.used_micros)} used today). It resets at {isoformat_ms(reset)}: "
        f"try again in {wait} seconds."
    )
    return TokenBudgetExceeded(message, headers={"Retry-After": str(wait)})


class Budgets:
    """The API's check before a new turn, with a cache of users without any limit.

    Most deployments set no default budget and few users a budget of their own: for
    those, a turn would read the database only to learn that nothing applies. So users
    found unlimited are remembered while every budget change reaches this process (as
    :class:`aichats.services.keys.KeyCache` does: only while ``db.listening``, emptied by
    any notification on :data:`BUDGETS_CHANNEL`, which :func:`set_budget` sends, or by a
    lost listening connection; a read that raced with a change is not kept). A user with a
    budget is read at every turn: their usage moves with every reply, in any process.
    """

    MAX_ENTRIES = 100_000

    def __init__(self, default: int | None) -> None:
        self.default = default
        self._unlimited: set[str] = set()
        self._generation = 0

    def forget_all(self, _payload: str | None = None) -> None:
        self._generation += 1
        self._unlimited.clear()

    async def attach(self, db: Database) -> None:
        await db.listen(BUDGETS_CHANNEL, self.forget_all)

    async def check(self, db: Database, user_id: str, tx: Connection | None = None) -> None:
        """Raise :class:`TokenBudgetExceeded` (429) if ``user_id`` may not start a turn now
        (read in ``tx`` when the caller holds one)."""
        if user_id in self._unlimited and db.listening:
            return
        generation = self._generation
        now = now_ms()
        standing = (await standings(tx or db, [user_id], now=now, default=self.default))[user_id]
        if standing.budget is None:
            if db.listening and generation == self._generation:
                if len(self._unlimited) >= self.MAX_ENTRIES:
                    self._unlimited.clear()
                self._unlimited.add(user_id)
            return
        if standing.over:
            raise exceeded(standing, now)


# ------------------------------------------------------------ the operator's settings

_BUDGET_OF = sa.select(_b.tokens_per_day).where(_b.user_id == sa.bindparam("user_id"))
_SET_INSERT = postgresql.insert(token_budgets).values(
    user_id=sa.bindparam("user_id"), tokens_per_day=sa.bindparam("tokens"), updated_at=sa.bindparam("now")
)
_SET = _SET_INSERT.on_conflict_do_update(
    index_elements=[_b.user_id],
    set_={"tokens_per_day": _SET_INSERT.excluded.tokens_per_day, "updated_at": _SET_INSERT.excluded.updated_at},
)
_CLEAR = sa.delete(token_budgets).where(_b.user_id == sa.bindparam("user_id"))


@dataclass(frozen=True, slots=True)
class OwnBudget:
    """A user's own budget: ``own`` False when the default applies; else ``tokens`` (None: no limit)."""

    own: bool
    tokens: int | None


async def own_budget(db: Database, user_id: str) -> OwnBudget:
    if not await user_exists(db, user_id):
        raise NotFound(f"no user {user_id}")
    row = await db.fetch_one(_BUDGET_OF, {"user_id": user_id})
    return OwnBudget(False, None) if row is None else OwnBudget(True, row["tokens_per_day"])


async def set_budget(db: Database, user_id: str, tokens: int | None) -> None:
    """Give ``user_id`` a budget of their own: ``tokens`` blended tokens a day (None: no limit).
    Every server process applies it from its next request."""
    if tokens is not None and tokens < 0:
        raise ValueError("a budget is at least 0 tokens")
    if not await user_exists(db, user_id):
        raise NotFound(f"no user {user_id}")
    async with db.transaction() as tx:
        await tx.execute(_SET, {"user_id": user_id, "tokens": tokens, "now": now_ms()})
        await tx.notify(BUDGETS_CHANNEL, user_id)


async def clear_budget(db: Database, user_id: str) -> None:
    """``user_id`` goes back to ``AICHATS_TOKEN_BUDGET_PER_DAY``."""
    if not await user_exists(db, user_id):
        raise NotFound(f"no user {user_id}")
    async with db.transaction() as tx:
        await tx.execute(_CLEAR, {"user_id": user_id})
        await tx.notify(BUDGETS_CHANNEL, user_id)
