"""The operator's MCP servers (``AICHATS_TOOL_SERVERS``): how to reach them, and their tools.

Every turn offers every user the operator's tools, so their lists are kept, not fetched per
turn: listing a server costs a connection (and, for a stdio server, starting its process).
Each server is listed when first needed (callers that ask meanwhile share the one listing
under way), then again in the background once its list is :data:`REFRESH_SECONDS` old:
meanwhile callers get the list they had, so a turn never waits on a server that is slow or
down after its first listing. A server that cannot be listed offers no tools, says why in
the log, and is tried again only after :data:`RETRY_SECONDS` (a server that is down is not
hammered by every turn). The servers are trusted: the outbound URL rules do not apply to them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from aichats.config import OperatorToolServer, Settings
from aichats.tools import Endpoint, ToolInfo, url_policy
from aichats.tools.mcp import list_tools

log = logging.getLogger("aichats.tools.operator")

REFRESH_SECONDS = 300.0
RETRY_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class _Listing:
    tools: list[ToolInfo]
    until: float  # when it is listed again (on the next call after that instant)


def endpoint(server: OperatorToolServer) -> Endpoint:
    return Endpoint(
        name=server.name,
        url=server.url,
        headers=dict(server.headers),
        command=server.command,
        args=tuple(server.args),
        env=dict(server.env),
        trusted=True,
    )


class OperatorServers:
    """The operator's servers, from ``settings.tool_servers``, and their tool lists, kept as
    the module's docstring says. ``clock`` (monotonic seconds) is for tests."""

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._endpoints = [endpoint(server) for server in settings.tool_servers]
        self._timeout = settings.tool_timeout_seconds
        self._clock = clock
        self._listings: dict[str, _Listing] = {}
        self._pending: dict[str, asyncio.Task[list[ToolInfo]]] = {}

    def endpoints(self) -> list[Endpoint]:
        return list(self._endpoints)

    async def tools(self) -> dict[str, list[ToolInfo]]:
        """Each server's tools, by its name (``[]`` for one that cannot be listed)."""
        lists = await asyncio.gather(*(self._tools_of(each) for each in self._endpoints))
        return {each.name: tools for each, tools in zip(self._endpoints, lists, strict=True)}

    async def _tools_of(self, server: Endpoint) -> list[ToolInfo]:
        listing = self._listings.get(server.name)
        if listing is not None and self._clock() < listing.until:
            return listing.tools
        task = self._pending.get(server.name)
        if task is None:
            task = self._pending[server.name] = asyncio.create_task(self._list(server))
            task.add_done_callback(lambda done: self._forget(server.name, done))
        if listing is not None:  # listed before: that list, while the new one is made
            return listing.tools
        # Shielded: a caller that gives up (a cancelled turn) leaves the listing to the others.
        return await asyncio.shield(task)

    async def _list(self, server: Endpoint) -> list[ToolInfo]:
        try:
            tools = await list_tools(server, url_policy(allow_private=True), self._timeout)
        except Exception as error:  # a ToolServerError, or anything else: no tools meanwhile
            where = server.url or " ".join((server.command or "", *server.args))
            log.warning(
                "operator tool server %s (%s) offers no tools for %g s: %s", server.name, where, RETRY_SECONDS, error
            )
            self._listings[server.name] = _Listing([], self._clock() + RETRY_SECONDS)
            return []
        self._listings[server.name] = _Listing(tools, self._clock() + REFRESH_SECONDS)
        return tools

    def _forget(self, name: str, task: asyncio.Task[list[ToolInfo]]) -> None:
        if self._pending.get(name) is task:
            del self._pending[name]
