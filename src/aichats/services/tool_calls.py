"""A turn's steps and tool calls: the one owner of ``reply_steps`` and ``tool_calls``.

A turn that uses tools calls its model several times. Each call that asked for tools is a
*step*, stored once it ends with the text the model wrote and the tokens it used, together
with the tool calls it made (``requested``). Each call then moves on: ``running`` ->
``completed`` or ``failed``; or, when it changes things and a user is there to ask,
``awaiting_approval`` -> ``approved`` (then it runs) or ``denied``.

What is stored is what a resumed turn replays (:func:`progress`): after a crash, or once the
user decided, the turn rebuilds the conversation from the steps and calls, runs only what
has not finished, and counts every step's tokens once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypedDict, cast

import orjson
import sqlalchemy as sa

from aichats import ids
from aichats.clock import isoformat_ms, isoformat_ms_or_none, now_ms
from aichats.errors import Conflict, NotFound
from aichats.services.sql import json_records, json_texts
from aichats.storage.database import Connection, Database
from aichats.storage.schema import reply_steps, tool_calls

# Where a call is: the last four are final.
REQUESTED = "requested"
AWAITING_APPROVAL = "awaiting_approval"
APPROVED = "approved"
RUNNING = "running"
COMPLETED = "completed"
FAILED = "failed"
DENIED = "denied"
FINAL = frozenset({COMPLETED, FAILED, DENIED})
DENIED_TEXT = "The user denied this call: it did not run."

_c = tool_calls.c
_s = reply_steps.c
_CALL_COLUMNS = (
    _c.pk, _c.id, _c.message_pk, _c.run_pk, _c.step, _c.position, _c.call_id, _c.name, _c.server_id, _c.server,
    _c.tool, _c.arguments, _c.status, _c.needs_approval, _c.result, _c.is_error, _c.created_at, _c.started_at,
    _c.finished_at, _c.duration_ms, _c.decided_at,
)  # fmt: skip


class ToolCallRow(TypedDict):
    """A tool call as :data:`_CALL_COLUMNS` read it (typed, not copied: see ``chats.ChatRow``)."""

    pk: int
    id: str
    message_pk: int
    run_pk: int
    step: int
    position: int
    call_id: str
    name: str
    server_id: str | None
    server: str | None
    tool: str
    arguments: str
    status: str
    needs_approval: bool
    result: str | None
    is_error: bool
    created_at: int
    started_at: int | None
    finished_at: int | None
    duration_ms: int | None
    decided_at: int | None


class StepRow(TypedDict):
    step: int
    text: str
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True, slots=True)
class NewCall:
    """A tool call the model made, as the turn resolved it."""

    call_id: str
    name: str  # as offered to the model
    server_id: str | None
    server: str | None
    tool: str  # the tool's own name on its server (a built-in's name)
    arguments: str
    needs_approval: bool


@dataclass(frozen=True, slots=True)
class Progress:
    """What a run has done so far: its steps in order, and each step's calls in order."""

    steps: list[StepRow]
    calls: dict[int, list[ToolCallRow]]

    @property
    def input_tokens(self) -> int:
        return sum(step["input_tokens"] for step in self.steps)

    @property
    def output_tokens(self) -> int:
        return sum(step["output_tokens"] for step in self.steps)


def tool_call_json(row: ToolCallRow | dict[str, Any]) -> dict[str, Any]:
    """A tool call as the API shows it (with its reply's messages, and in events)."""
    server = None if row["server"] is None else {"id": row["server_id"], "name": row["server"]}
    return {
        "id": row["id"],
        "name": row["name"],
        "server": server,
        "arguments": row["arguments"],
        "status": row["status"],
        "result": row["result"],
        "is_error": bool(row["is_error"]),
        "needs_approval": bool(row["needs_approval"]),
        "created_at": isoformat_ms(row["created_at"]),
        "started_at": isoformat_ms_or_none(row["started_at"]),
        "finished_at": isoformat_ms_or_none(row["finished_at"]),
        "duration_ms": row["duration_ms"],
    }


# ------------------------------------------------------------------ writing a turn's steps

_INSERT_STEP = sa.insert(reply_steps).values(
    {
        c: sa.bindparam(c)
        for c in ("run_pk", "message_pk", "step", "text", "input_tokens", "output_tokens", "created_at")
    }
)
_new = json_records(
    "calls", id=sa.Text(), position=sa.Integer(), call_id=sa.Text(), offered=sa.Text(), server_id=sa.Text(),
    server=sa.Text(), tool=sa.Text(), arguments=sa.Text(), needs_approval=sa.Integer(),
)  # fmt: skip
# Every call of a step in one statement, whatever their number.
_INSERT_CALLS = (
    sa.insert(tool_calls)
    .from_select(
        [
            "id", "chat_pk", "message_pk", "run_pk", "step", "position", "call_id", "name", "server_id", "server",
            "tool", "arguments", "status", "needs_approval", "is_error", "created_at",
        ],
        sa.select(
            _new.c.id, sa.bindparam("chat_pk", type_=sa.BigInteger), sa.bindparam("message_pk", type_=sa.BigInteger),
            sa.bindparam("run_pk", type_=sa.BigInteger), sa.bindparam("step", type_=sa.Integer), _new.c.position,
            _new.c.call_id, _new.c.offered, _new.c.server_id, _new.c.server, _new.c.tool, _new.c.arguments,
            sa.literal(REQUESTED), _new.c.needs_approval == 1, sa.false(), sa.bindparam("now", type_=sa.BigInteger),
        ),
    )
    .returning(*_CALL_COLUMNS)
)  # fmt: skip


async def record_step(
    tx: Connection,
    *,
    chat_pk: int,
    run_pk: int,
    message_pk: int,
    step: int,
    text: str,
    input_tokens: int,
    output_tokens: int,
    calls: list[NewCall],
) -> list[ToolCallRow]:
    """Store one model call that asked for tools, and its calls (``requested``), in order."""
    now = now_ms()
    await tx.execute(
        _INSERT_STEP,
        {
            "run_pk": run_pk, "message_pk": message_pk, "step": step, "text": text, "input_tokens": input_tokens,
            "output_tokens": output_tokens, "created_at": now,
        },
    )  # fmt: skip
    records = [
        {
            "id": ids.new_id(ids.TOOL_CALL), "position": position, "call_id": call.call_id, "offered": call.name,
            "server_id": call.server_id, "server": call.server, "tool": call.tool, "arguments": call.arguments,
            "needs_approval": int(call.needs_approval),
        }
        for position, call in enumerate(calls)
    ]  # fmt: skip
    rows = await tx.fetch_all(
        _INSERT_CALLS,
        {
            "calls": orjson.dumps(records).decode(), "chat_pk": chat_pk, "message_pk": message_pk, "run_pk": run_pk,
            "step": step, "now": now,
        },
    )  # fmt: skip
    return sorted(cast(list[ToolCallRow], rows), key=lambda row: row["position"])


_SET_STATUS = (
    sa.update(tool_calls)
    .where(_c.pk == sa.bindparam("pk"), _c.status.in_(json_texts("from")))
    .values(status=sa.bindparam("status"), started_at=sa.func.coalesce(sa.bindparam("started_at"), _c.started_at))
    .returning(*_CALL_COLUMNS)
)
_FINISH = (
    sa.update(tool_calls)
    .where(_c.pk == sa.bindparam("pk"), _c.status.in_(json_texts("from")))
    .values(
        status=sa.bindparam("status"),
        result=sa.bindparam("result"),
        is_error=sa.bindparam("is_error"),
        finished_at=sa.bindparam("now"),
        duration_ms=sa.bindparam("duration_ms"),
    )
    .returning(*_CALL_COLUMNS)
)


async def start(tx: Connection, pk: int, now: int) -> ToolCallRow | None:
    """The call starts running (from ``requested``, or ``approved``, or again after a crash
    while ``running``); None if it is no longer runnable (denied meanwhile, say)."""
    row = await tx.fetch_one(
        _SET_STATUS, {"pk": pk, "status": RUNNING, "started_at": now, "from": _texts(REQUESTED, APPROVED, RUNNING)}
    )
    return cast("ToolCallRow | None", row)


_AWAIT_APPROVAL = (
    sa.update(tool_calls)
    .where(_c.pk == sa.bindparam("pk"), _c.status.in_(json_texts("from")))
    .values(status=AWAITING_APPROVAL, needs_approval=True)
    .returning(*_CALL_COLUMNS)
)


async def await_approval(tx: Connection, pk: int) -> ToolCallRow:
    """The call waits for the user (from ``requested``: a call that started is never asked)."""
    row = await tx.fetch_one(_AWAIT_APPROVAL, {"pk": pk, "from": _texts(REQUESTED)})
    assert row is not None
    return cast(ToolCallRow, row)


async def finish(
    tx: Connection, pk: int, *, status: str, result: str, is_error: bool, duration_ms: int | None, now: int
) -> ToolCallRow | None:
    """The call's final state (``completed``, ``failed`` or ``denied``) and what it gave back;
    None if it had ended already (a Stop marked it failed): a final state is never overwritten."""
    row = await tx.fetch_one(
        _FINISH,
        {
            "pk": pk,
            "status": status,
            "result": result,
            "is_error": is_error,
            "duration_ms": duration_ms,
            "now": now,
            "from": _texts(REQUESTED, APPROVED, RUNNING),
        },
    )
    return cast("ToolCallRow | None", row)


# ------------------------------------------------------------------ the user's decision

_BY_ID = sa.select(*_CALL_COLUMNS).where(_c.chat_pk == sa.bindparam("chat_pk"), _c.id == sa.bindparam("id"))
_DECIDE = (
    sa.update(tool_calls)
    .where(_c.pk == sa.bindparam("pk"), _c.status == AWAITING_APPROVAL)
    .values(
        status=sa.bindparam("status"),
        decided_at=sa.bindparam("now"),
        result=sa.bindparam("result"),
        is_error=sa.bindparam("is_error"),
        finished_at=sa.bindparam("finished_at"),
    )
    .returning(*_CALL_COLUMNS)
)
_STILL_AWAITING = sa.select(sa.func.count().label("n")).where(
    _c.run_pk == sa.bindparam("run_pk"), _c.status == AWAITING_APPROVAL
)
STOPPED_TEXT = "The reply was stopped while this call ran: whether it did what it does is unknown."
_running = _c.status == RUNNING
_STOP_ALL = (
    sa.update(tool_calls)
    .where(_c.run_pk == sa.bindparam("run_pk"), _c.status.in_(json_texts("from")))
    .values(
        status=sa.case((_running, FAILED), else_=DENIED),
        result=sa.case((_running, STOPPED_TEXT), else_=DENIED_TEXT),
        decided_at=sa.case((_running, _c.decided_at), else_=sa.bindparam("now")),
        finished_at=sa.bindparam("now"),
        is_error=True,
    )
    .returning(*_CALL_COLUMNS)
)


async def find(tx: Connection, chat_pk: int, tool_call_id: str) -> ToolCallRow:
    """The chat's tool call ``tool_call_id`` (404 if it is not this chat's)."""
    row = await tx.fetch_one(_BY_ID, {"chat_pk": chat_pk, "id": tool_call_id})
    if row is None:
        raise NotFound(f"no tool call {tool_call_id} in this chat")
    return cast(ToolCallRow, row)


async def decide(tx: Connection, row: ToolCallRow, *, approve: bool) -> ToolCallRow:
    """Approve or deny the call ``row`` (:func:`find`), which must await approval (else 409)."""
    now = now_ms()
    params: dict[str, object] = {"pk": row["pk"], "now": now}
    if approve:
        params |= {"status": APPROVED, "result": None, "is_error": False, "finished_at": None}
    else:
        params |= {"status": DENIED, "result": DENIED_TEXT, "is_error": True, "finished_at": now}
    decided = await tx.fetch_one(_DECIDE, params)
    if decided is None:
        raise Conflict(f"this tool call is {row['status']}, not awaiting approval")
    return cast(ToolCallRow, decided)


async def awaiting(tx: Connection, run_pk: int) -> int:
    """How many of the run's calls still await the user's decision."""
    row = await tx.fetch_one(_STILL_AWAITING, {"run_pk": run_pk})
    return 0 if row is None else int(row["n"])


async def stop_unfinished(tx: Connection, run_pk: int) -> list[ToolCallRow]:
    """End every call of the run that has not ended (its reply was stopped): those that had
    not run are denied; one running fails, saying its outcome is unknown."""
    unfinished = _texts(REQUESTED, AWAITING_APPROVAL, APPROVED, RUNNING)
    rows = await tx.fetch_all(_STOP_ALL, {"run_pk": run_pk, "now": now_ms(), "from": unfinished})
    return cast(list[ToolCallRow], rows)


# ------------------------------------------------------------------ reading

_STEPS = (
    sa.select(_s.step, _s.text, _s.input_tokens, _s.output_tokens)
    .where(_s.run_pk == sa.bindparam("run_pk"))
    .order_by(_s.step)
)
_CALLS_OF_RUN = sa.select(*_CALL_COLUMNS).where(_c.run_pk == sa.bindparam("run_pk")).order_by(_c.step, _c.position)
_pks = json_records("messages", pk=sa.BigInteger())
_CALLS_OF_MESSAGES = (
    sa.select(*_CALL_COLUMNS)
    .where(_c.message_pk.in_(sa.select(_pks.c.pk)))
    .order_by(_c.message_pk, _c.step, _c.position)
)
_STEP_USAGE = sa.select(
    sa.func.coalesce(sa.func.sum(_s.input_tokens), 0).label("input_tokens"),
    sa.func.coalesce(sa.func.sum(_s.output_tokens), 0).label("output_tokens"),
).where(_s.run_pk == sa.bindparam("run_pk"))


async def progress(db: Database | Connection, run_pk: int) -> Progress:
    """The run's stored steps and their calls, in order (two reads, whatever their number)."""
    steps = cast(list[StepRow], await db.fetch_all(_STEPS, {"run_pk": run_pk}))
    calls: dict[int, list[ToolCallRow]] = {}
    for row in cast(list[ToolCallRow], await db.fetch_all(_CALLS_OF_RUN, {"run_pk": run_pk})):
        calls.setdefault(row["step"], []).append(row)
    return Progress(steps, calls)


async def step_usage(tx: Connection, run_pk: int) -> tuple[int, int]:
    """Input and output tokens of the run's stored steps (what a stopped reply still cost)."""
    row = await tx.fetch_one(_STEP_USAGE, {"run_pk": run_pk})
    assert row is not None
    return int(row["input_tokens"]), int(row["output_tokens"])


async def of_messages(db: Database | Connection, message_pks: list[int]) -> dict[int, list[ToolCallRow]]:
    """The tool calls of each message (a page of them: one query), in order."""
    if not message_pks:
        return {}
    rows = await db.fetch_all(
        _CALLS_OF_MESSAGES, {"messages": orjson.dumps([{"pk": pk} for pk in message_pks]).decode()}
    )
    calls: dict[int, list[ToolCallRow]] = {}
    for row in cast(list[ToolCallRow], rows):
        calls.setdefault(row["message_pk"], []).append(row)
    return calls


_DELETE_CALLS = sa.delete(tool_calls).where(_c.message_pk == sa.bindparam("message_pk"))
_DELETE_STEPS = sa.delete(reply_steps).where(_s.message_pk == sa.bindparam("message_pk"))


async def forget(tx: Connection, message_pk: int) -> None:
    """A reply written again starts with no steps and no calls."""
    await tx.execute(_DELETE_CALLS, {"message_pk": message_pk})
    await tx.execute(_DELETE_STEPS, {"message_pk": message_pk})


def _texts(*values: str) -> str:
    return orjson.dumps(values).decode()
