"""A user's MCP tool servers (table ``tool_servers``, owned here): registered, listed, refreshed,
removed, and read for a turn.

A server is stored only once its tools have been listed: one that cannot be reached or
listed is refused (422, saying what failed) and nothing is stored. Its tool list is kept as
JSON, so a turn knows what to offer without connecting; :func:`refresh_server` lists it
again. Its headers (an ``Authorization`` header, say) are sealed (:mod:`aichats.crypto`) and
never returned: answers say ``has_headers``. Its URL follows the outbound rule
(:mod:`aichats.outbound`) with the tools' policy: checked when saved, and again at each
connection. Its name prefixes the tools the model sees (``<name>__<tool>``), so it is short,
plain, one per user, and neither ``builtin`` nor an operator's server's (whose tools would
shadow its own).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypedDict, cast

import orjson
import sqlalchemy as sa

from aichats import ids, outbound
from aichats.clock import isoformat_ms, now_ms
from aichats.crypto import Sealer, UnsealError
from aichats.errors import Conflict, Invalid, NotFound
from aichats.services.pagination import Keyset, Page, PageRequest, read_page
from aichats.storage.database import Database, UniqueViolation
from aichats.storage.schema import tool_servers
from aichats.tools import Endpoint, ToolInfo, ToolServerError, mcp

log = logging.getLogger("aichats.services.tool_servers")

NAME_PATTERN = r"^[A-Za-z0-9_-]{1,32}$"
MAX_URL_LENGTH = 2048
MAX_HEADERS = 20
MAX_HEADER_NAME_LENGTH = 128
MAX_HEADER_VALUE_LENGTH = 8192
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP token (RFC 9110)
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e]*")  # printable ASCII: no CR, LF or other control character
# Headers the HTTP client or the MCP transport sets itself: a user's value would break the exchange.
RESERVED_HEADERS = frozenset(
    {
        "accept", "connection", "content-length", "content-type", "expect", "host", "keep-alive",
        "last-event-id", "mcp-protocol-version", "mcp-session-id", "proxy-authorization", "te",
        "trailer", "transfer-encoding", "upgrade",
    }
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class NewServer:
    """A server to register: checked, then listed, by :func:`create_server`."""

    name: str
    url: str
    headers: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Access:
    """How the service reaches servers: the outbound policy
    (``AICHATS_TOOLS_ALLOW_PRIVATE_URLS``), how long a listing may take, and the key that
    seals headers."""

    policy: outbound.Policy
    timeout: float
    sealer: Sealer
    # Names a user's server may not take: the operator's servers' (whose tools every agent has
    # under those names) and ``builtin`` (every built-in tool, in a chat's ``tools``).
    reserved_names: frozenset[str] = frozenset({"builtin"})


class ServerRow(TypedDict):
    """A server as stored (typed, not copied: see ``chats.ChatRow``): ``headers`` sealed,
    ``tools`` JSON."""

    pk: int
    id: str
    name: str
    url: str
    headers: str | None
    tools: str
    created_at: int
    updated_at: int
    refreshed_at: int


@dataclass(frozen=True, slots=True)
class UserServer:
    """A server as a turn uses it: its headers in clear, its tools as last listed."""

    id: str
    name: str
    url: str
    headers: dict[str, str]
    tools: list[ToolInfo]

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint(self.name, url=self.url, headers=self.headers)


_t = tool_servers.c
_COLUMNS = (_t.pk, _t.id, _t.name, _t.url, _t.headers, _t.tools, _t.created_at, _t.updated_at, _t.refreshed_at)
_INSERT = (
    sa.insert(tool_servers)
    .values(
        {
            c: sa.bindparam(c)
            for c in ("id", "user_id", "name", "url", "headers", "tools", "created_at", "updated_at", "refreshed_at")
        }
    )
    .returning(_t.pk)
)
_OWNED = sa.select(*_COLUMNS).where(_t.id == sa.bindparam("server_id"), _t.user_id == sa.bindparam("user_id"))
_NAMED = sa.select(_t.pk).where(_t.user_id == sa.bindparam("user_id"), _t.name == sa.bindparam("name"))
# Newest first, ``first``/``after`` only.
_LIST = Keyset(
    "ts",
    sa.select(*_COLUMNS).where(_t.user_id == sa.bindparam("user_id")),
    (_t.pk,),
    descending=True,
    forwards_only=True,
)
_OF_USER = (
    sa.select(_t.id, _t.name, _t.url, _t.headers, _t.tools).where(_t.user_id == sa.bindparam("user_id")).order_by(_t.pk)
)
_REFRESH = (
    sa.update(tool_servers)
    .where(_t.pk == sa.bindparam("pk"))
    .values(tools=sa.bindparam("tools"), updated_at=sa.bindparam("now"), refreshed_at=sa.bindparam("now"))
)
_DELETE = sa.delete(tool_servers).where(_t.id == sa.bindparam("server_id"), _t.user_id == sa.bindparam("user_id"))


def server_json(row: ServerRow) -> dict[str, Any]:
    """A server as the API answers it: never its headers, only whether it has some."""
    return {
        "id": row["id"],
        "name": row["name"],
        "url": row["url"],
        "has_headers": row["headers"] is not None,
        "tools": [
            {
                "name": tool["name"],
                "description": tool["description"],
                "read_only": tool["read_only"],
                "destructive": tool["destructive"],
            }
            for tool in orjson.loads(row["tools"])
        ],
        "created_at": isoformat_ms(row["created_at"]),
        "updated_at": isoformat_ms(row["updated_at"]),
        "refreshed_at": isoformat_ms(row["refreshed_at"]),
    }


async def create_server(db: Database, user_id: str, data: NewServer, access: Access) -> ServerRow:
    """Check ``data``, list the server's tools, and store it (409 if the name is taken)."""
    name = _checked_name(data.name)
    headers = _checked_headers(data.headers)
    if len(data.url) > MAX_URL_LENGTH:
        raise Invalid(f"`url` is longer than {MAX_URL_LENGTH} characters")
    await outbound.check_url(data.url, access.policy)
    if name in access.reserved_names:
        raise Conflict(
            f"the name {name!r} is reserved (`builtin`, a built-in tool's, or a tool server of the operator's): "
            "choose another"
        )
    if await db.fetch_one(_NAMED, {"user_id": user_id, "name": name}) is not None:
        raise Conflict(_taken(name))
    tools = await _listed(Endpoint(name, url=data.url, headers=headers), access, "nothing was saved")
    now = now_ms()
    values = {
        "id": ids.new_id(ids.TOOL_SERVER),
        "user_id": user_id,
        "name": name,
        "url": data.url,
        "headers": access.sealer.seal(orjson.dumps(headers).decode()) if headers else None,
        "tools": _tools_json(tools),
        "created_at": now,
        "updated_at": now,
        "refreshed_at": now,
    }
    try:
        inserted = await db.write_one(_INSERT, values)
    except UniqueViolation:  # registered meanwhile, by a concurrent request
        raise Conflict(_taken(name)) from None
    assert inserted is not None
    del values["user_id"]
    return cast(ServerRow, {"pk": inserted["pk"], **values})


async def get_server(db: Database, user_id: str, server_id: str) -> ServerRow:
    """The user's server ``server_id`` (404 if there is none, or it is another user's)."""
    row = await db.fetch_one(_OWNED, {"server_id": server_id, "user_id": user_id})
    if row is None:
        raise NotFound(f"no tool server {server_id}")
    return cast(ServerRow, row)


async def list_servers(db: Database, user_id: str, page: PageRequest) -> Page[ServerRow]:
    """The user's servers, newest first."""
    return await read_page(db, _LIST, page, {"user_id": user_id})


async def refresh_server(db: Database, user_id: str, server_id: str, access: Access) -> ServerRow:
    """List the server's tools again and store them (422 if it cannot be listed: nothing changes)."""
    row = await get_server(db, user_id, server_id)
    try:
        headers = _unsealed(row["headers"], access.sealer)
    except UnsealError as error:
        raise Invalid(f"the server's headers cannot be read: {error}; delete it and register it again") from None
    tools = await _listed(Endpoint(row["name"], url=row["url"], headers=headers), access, "nothing was changed")
    now = now_ms()
    listed = _tools_json(tools)
    async with db.transaction() as tx:
        changed = await tx.execute(_REFRESH, {"pk": row["pk"], "tools": listed, "now": now})
    if not changed:  # deleted meanwhile
        raise NotFound(f"no tool server {server_id}")
    return cast(ServerRow, {**row, "tools": listed, "updated_at": now, "refreshed_at": now})


async def delete_server(db: Database, user_id: str, server_id: str) -> None:
    """Remove the server (404 if there is none, or it is another user's); its past calls keep its id."""
    async with db.transaction() as tx:
        deleted = await tx.execute(_DELETE, {"server_id": server_id, "user_id": user_id})
    if not deleted:
        raise NotFound(f"no tool server {server_id}")


async def servers_of(db: Database, user_id: str, sealer: Sealer) -> list[UserServer]:
    """Every server of the user, with everything a turn needs, in one query (oldest first).

    A server whose headers this key cannot read (the key changed) is left out, and logged:
    called without them it would fail anyway, and its owner must register it again.
    """
    servers = []
    for row in await db.fetch_all(_OF_USER, {"user_id": user_id}):
        try:
            headers = _unsealed(row["headers"], sealer)
        except UnsealError as error:
            log.error("tool server %s of %s left out: its headers cannot be read: %s", row["id"], user_id, error)
            continue
        tools = [ToolInfo.from_json(tool) for tool in orjson.loads(row["tools"])]
        servers.append(UserServer(row["id"], row["name"], row["url"], headers, tools))
    return servers


# --------------------------------------------------------------------------------- helpers


def _checked_name(name: str) -> str:
    if not re.fullmatch(NAME_PATTERN, name):
        raise Invalid(
            "`name` must be 1 to 32 letters, digits, '_' or '-': it prefixes the names of its tools (name__tool)"
        )
    return name


def _checked_headers(headers: Mapping[str, str]) -> dict[str, str]:
    if len(headers) > MAX_HEADERS:
        raise Invalid(f"`headers` may hold at most {MAX_HEADERS} headers")
    seen: set[str] = set()
    for name, value in headers.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise Invalid("`headers` must be an object of strings")
        if not (_HEADER_NAME.fullmatch(name) and len(name) <= MAX_HEADER_NAME_LENGTH):
            raise Invalid(f"`headers`: {name[:40]!r} is not a header name (letters, digits and !#$%&'*+.^_`|~-)")
        if name.lower() in RESERVED_HEADERS:
            raise Invalid(f"`headers`: {name} is set by the service itself")
        if name.lower() in seen:
            raise Invalid(f"`headers`: {name} is given twice")
        seen.add(name.lower())
        if len(value) > MAX_HEADER_VALUE_LENGTH:
            raise Invalid(f"`headers`: the value of {name} is longer than {MAX_HEADER_VALUE_LENGTH} characters")
        if not _HEADER_VALUE.fullmatch(value):
            raise Invalid(
                f"`headers`: the value of {name} must be printable ASCII (no CR, LF or other control character)"
            )
    return dict(headers)


async def _listed(endpoint: Endpoint, access: Access, consequence: str) -> list[ToolInfo]:
    try:
        return await mcp.list_tools(endpoint, access.policy, access.timeout)
    except ToolServerError as error:
        raise Invalid(f"{error}; {consequence}") from None


def _unsealed(sealed: str | None, sealer: Sealer) -> dict[str, str]:
    if sealed is None:
        return {}
    headers: dict[str, str] = orjson.loads(sealer.unseal(sealed))
    return headers


def _tools_json(tools: list[ToolInfo]) -> str:
    return orjson.dumps([tool.as_json() for tool in tools]).decode()


def _taken(name: str) -> str:
    return f"you already have a tool server named {name!r}: choose another name, or delete that one first"
