"""What one turn may call, and calling it.

:func:`available` gathers every tool of a user: the built-in ones, the operator's servers'
and the user's own servers'. :func:`selected` applies a chat's or a schedule's choice
(``tools``: names of servers, tools, or ``builtin``). A :class:`Toolbox` holds the chosen
ones for one turn, offers them to the model (:attr:`Toolbox.specs`) and runs a call
(:meth:`Toolbox.call`): arguments parsed, a time limit, the result cut to a size, and any
failure turned into an error result for the model. It opens MCP sessions as calls need
them, and closes them when the turn ends.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

import orjson

from aichats.agent.models import ToolCall, ToolChoice, ToolSpec
from aichats.config import Settings
from aichats.crypto import Sealer
from aichats.services import tool_servers
from aichats.services.tool_calls import REQUESTED, NewCall, ToolCallRow
from aichats.storage.database import Database
from aichats.tools import Endpoint, ToolInfo, ToolOutcome, builtin, mcp, url_policy
from aichats.tools.mcp import Sessions
from aichats.tools.operator import OperatorServers

log = logging.getLogger("aichats.tools")

SEPARATOR = "__"  # between a server's name and its tool's, in the names the model sees
MAX_NAME = 64  # what every provider accepts for a tool's name
BUILTIN = "builtin"  # in a selection: every built-in tool
Kind = Literal["builtin", "operator", "user"]


@dataclass(frozen=True, slots=True)
class Tool:
    """A tool a turn may offer: as the model sees it (``spec``), as its server lists it
    (``info``), and where it lives."""

    spec: ToolSpec
    info: ToolInfo
    kind: Kind
    server_id: str | None = None  # a user's server
    server: str | None = None  # its server's name (None: built in)
    endpoint: Endpoint | None = None

    @property
    def needs_approval(self) -> bool:
        """Whether a call waits for the user's approval in a chat (docs/tools.md): a tool
        that changes things, unless it is built in (they change only the chat's schedule)."""
        return self.kind != "builtin" and self.info.changes_things

    def as_json(self) -> dict[str, Any]:
        """The tool as ``GET /api/v1/tools`` lists it."""
        return {
            "name": self.spec.name,
            "tool": self.info.name,
            "description": self.info.description,
            "server": None if self.server is None else {"id": self.server_id, "name": self.server},
            "kind": self.kind,
            "read_only": self.info.read_only,
            "destructive": self.info.destructive,
            "needs_approval": self.needs_approval,
        }


def offered_name(server: str, tool: str) -> str:
    """``<server>__<tool>``, in the characters every provider accepts, at most 64 long."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", f"{server}{SEPARATOR}{tool}")[:MAX_NAME]


def _from_server(infos: Iterable[ToolInfo], kind: Kind, endpoint: Endpoint, server_id: str | None) -> list[Tool]:
    return [
        Tool(
            ToolSpec(offered_name(endpoint.name, info.name), info.description, info.input_schema),
            info,
            kind,
            server_id,
            endpoint.name,
            endpoint,
        )
        for info in infos
    ]


async def available(db: Database, operator: OperatorServers, user_id: str, sealer: Sealer) -> list[Tool]:
    """Every tool the user's agent can use: built in, the operator's, the user's own (each
    offered name once: the first wins, built-in tools first)."""
    tools = [
        Tool(ToolSpec(b.info.name, b.info.description, b.info.input_schema), b.info, "builtin")
        for b in builtin.BUILTIN.values()
    ]
    listed = await operator.tools()
    for endpoint in operator.endpoints():
        tools += _from_server(listed.get(endpoint.name, ()), "operator", endpoint, None)
    for server in await tool_servers.servers_of(db, user_id, sealer):
        tools += _from_server(server.tools, "user", server.endpoint, server.id)
    unique: dict[str, Tool] = {}
    for tool in tools:
        unique.setdefault(tool.spec.name, tool)
    return list(unique.values())


def selected(tools: Iterable[Tool], selection: list[str] | None) -> list[Tool]:
    """The tools a selection names: every one for None; else those named by their offered
    name, their server's name, or ``builtin`` (or a built-in's own name)."""
    if selection is None:
        return list(tools)
    names = set(selection)
    return [
        tool
        for tool in tools
        if tool.spec.name in names or (tool.server is not None and tool.server in names)
        or (tool.kind == "builtin" and BUILTIN in names)
    ]  # fmt: skip


class Toolbox:
    """The tools of one turn, and the MCP sessions its calls open (an async context manager)."""

    def __init__(
        self,
        tools: list[Tool],
        context: builtin.Context,
        *,
        scheduled: bool = False,
        allow_changes: bool = False,
        first_choice: ToolChoice = "auto",
    ) -> None:
        self.tools = {tool.spec.name: tool for tool in tools}
        self.specs = [tool.spec for tool in tools]
        self.first_choice: ToolChoice = first_choice if tools else "auto"  # of the turn's first model call
        self.scheduled = scheduled  # nobody is there to approve: changes need ``allow_changes``
        self.allow_changes = allow_changes
        self._context = context
        self._settings: Settings = context.settings
        self._policy = url_policy(allow_private=self._settings.tools_allow_private_urls)
        self._stack = AsyncExitStack()
        self._sessions: Sessions | None = None

    async def __aenter__(self) -> Toolbox:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self._stack.aclose()

    def find(self, name: str) -> Tool | None:
        return self.tools.get(name)

    def resolve(self, call: ToolCall) -> NewCall:
        """A call the model made, as it is stored: where its tool lives, and whether it
        waits for the user's approval (never in a scheduled turn: see :meth:`refusal`).

        A name longer than any offered is stored cut and marked (``...``, which no offered
        name contains), so that it names no tool: cut plainly, it could name a real one that
        this lookup, made with the whole name, did not find (and so did not ask about)."""
        tool = self.find(call.name)
        name = call.name if len(call.name) <= MAX_NAME else call.name[: MAX_NAME - 3] + "..."
        return NewCall(
            call_id=call.id[:255] or "call",
            name=name,
            server_id=tool.server_id if tool else None,
            server=tool.server if tool else None,
            tool=tool.info.name if tool else call.name[:255],
            arguments=call.arguments,
            needs_approval=tool is not None and tool.needs_approval and not self.scheduled,
        )

    def asks(self, call: ToolCallRow) -> bool:
        """Whether the call must wait for the user before it runs: its tool, as the turn finds
        it now, needs approval, the call has not been decided nor started, and someone is
        there to ask. A call found ``running`` (its turn was cut off) is not asked again:
        :func:`aichats.runs.turn` reports it as interrupted if it changes things."""
        tool = self.find(call["name"])
        needed = tool is not None and tool.needs_approval and not self.scheduled
        return needed and call["status"] == REQUESTED

    def changes_things(self, call: ToolCallRow) -> bool:
        tool = self.find(call["name"])
        return tool is not None and tool.info.changes_things

    def refusal(self, call: ToolCallRow) -> str | None:
        """Why the call must not run (an error result for the model), or None."""
        tool = self.find(call["name"])
        if tool is None:
            return f"There is no tool named {call['name']!r} here. Tools: {', '.join(self.tools) or 'none'}."
        if self.scheduled and tool.info.changes_things and not self.allow_changes:
            return (
                f"Refused: {call['name']} changes things, and this scheduled run may not (nobody is there to "
                "approve it; the schedule's allow_changes is off)."
            )
        return None

    async def call(self, tool: Tool, arguments: str) -> ToolOutcome:
        """Run one call: never raises for the tool's failure, which is an error result."""
        settings = self._settings
        try:
            parsed = orjson.loads(arguments or "{}")
        except orjson.JSONDecodeError as error:
            return ToolOutcome(f"The arguments are not valid JSON ({error}): {arguments[:200]!r}", is_error=True)
        if not isinstance(parsed, dict):
            return ToolOutcome("The arguments must be a JSON object.", is_error=True)
        if tool.kind == "builtin":
            try:
                async with asyncio.timeout(settings.tool_timeout_seconds):
                    text = await builtin.BUILTIN[tool.info.name].run(self._context, parsed)
            except builtin.ToolFailure as error:
                return ToolOutcome(mcp.cut(str(error), settings.max_tool_result_chars), is_error=True)
            except TimeoutError:
                return ToolOutcome(f"{tool.spec.name} took over {settings.tool_timeout_seconds:g} s", is_error=True)
            except Exception as error:  # a bug, or a database that blinked: this call failed, not the reply
                log.exception("the built-in tool %s failed", tool.spec.name)
                return ToolOutcome(f"{tool.spec.name} failed unexpectedly ({type(error).__name__})", is_error=True)
            return ToolOutcome(mcp.cut(text, settings.max_tool_result_chars))
        assert tool.endpoint is not None
        if self._sessions is None:
            self._sessions = await self._stack.enter_async_context(Sessions(self._policy))
        return await self._sessions.call(
            tool.endpoint,
            tool.info.name,
            parsed,
            timeout=settings.tool_timeout_seconds,
            max_chars=settings.max_tool_result_chars,
        )
