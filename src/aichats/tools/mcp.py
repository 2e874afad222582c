"""Speaking MCP to tool servers, with the official SDK (``mcp`` 2.x): list their tools, call them.

- :func:`list_tools` connects, lists every page (at most :data:`MAX_PAGES`), and closes; any
  failure is a :class:`~aichats.tools.ToolServerError` saying what went wrong, and the whole
  of it, connecting included, ends within its one timeout.
- :class:`Sessions` serves the calls of one agent turn: a session per server, opened on the
  first call and closed when the turn ends; a call never raises for the server's failure
  (down, slow, killed mid-call, answering garbage or too much): the outcome says so, with
  ``is_error``, for the model to read.

Why a task per session: the SDK's client holds anyio task groups and cancel scopes, which
must be entered and exited by the same task, while a turn's calls run in tasks of their own,
started and cancelled by the turn. So each session is held by a task of its own
(:class:`_Session`): it enters the SDK's contexts, waits until it is closed, and exits them.
Calls use the session from their own tasks: a request may be sent from any task of the
loop and waits for its own answer, and a call's timeout or cancellation abandons only that
request (the SDK tells the server). Concurrent calls to one server therefore share one
session: over Streamable HTTP each is a POST of its own, over stdio a JSON-RPC id of its own.
Measured on the test server (loopback, 2 CPUs): a session takes about 0.1 s to open (the
version handshake, and the tool listing the SDK needs before a first call) and a call about
5 ms once open; a session per call would cost every call that 0.1 s.

Nothing waits without bound: a call is bounded by its timeout, connecting included; closing
a session is bounded by :data:`CLOSE_SECONDS`, after which its task is cancelled, and left
to end on its own past that (the SDK's stdio shutdown is shielded, bounded by its own
timeouts). A task that ends with an error has it logged, never raised into the loop.

A user's server (``trusted=False``) is reached only through :func:`aichats.outbound.async_client`:
its URL's syntax is checked first and each connection's address is checked as it is made;
the SDK follows a redirect only within the URL's origin (so never to another address).
Every HTTP answer is cut off past :data:`MAX_RESPONSE_BYTES`. The operator's servers are
trusted: a plain client (still without the environment's proxies), or a command over stdio.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Hashable
from contextlib import AsyncExitStack
from typing import Any

import anyio
import httpx2
import mcp_types
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from pydantic import ValidationError

from aichats import outbound
from aichats.tools import Endpoint, ToolInfo, ToolOutcome, ToolServerError

log = logging.getLogger("aichats.tools.mcp")

TOOL_NAME = re.compile(r"[A-Za-z0-9_.-]{1,128}")
MAX_PAGES = 20  # of a tool listing: a server whose cursor never ends cannot hold a listing
MAX_TOOLS = 256  # of one server; the rest are skipped
MAX_DESCRIPTION_CHARS = 4_000
MAX_SCHEMA_CHARS = 64_000  # of one tool's input schema, as JSON
MAX_RESPONSE_BYTES = 8 * 1024 * 1024  # of one HTTP answer (or SSE event) from a server
CLOSE_SECONDS = 3.0
CONNECT_SECONDS = 10.0
CLIENT_INFO = mcp_types.Implementation(name="aichats", version="1")

# Every session's task, so none is collected while it still runs (the loop holds tasks weakly).
_HELD: set[asyncio.Task[None]] = set()


# --------------------------------------------------------------------------------- listing


async def list_tools(endpoint: Endpoint, policy: outbound.Policy, timeout: float) -> list[ToolInfo]:
    """Every tool ``endpoint`` lists, within ``timeout`` seconds; :class:`ToolServerError` if it cannot be listed.

    A tool whose name or input schema a model could not be given is skipped (and logged).
    """
    session = _Session(endpoint, policy)
    try:
        with anyio.fail_after(timeout):
            client = await session.client()
            listed = await _all_tools(client, endpoint)
    except TimeoutError:
        raise ToolServerError(f"{_server(endpoint)} did not answer within {timeout:g} s") from None
    except ToolServerError:
        raise
    except Exception as error:
        raise ToolServerError(f"{_server(endpoint)} could not be listed: {describe(error)}") from None
    finally:
        await session.close()
    return _tool_infos(endpoint, listed)


async def _all_tools(client: Client, endpoint: Endpoint) -> list[mcp_types.Tool]:
    tools: list[mcp_types.Tool] = []
    cursor: str | None = None
    for _ in range(MAX_PAGES):
        page = await client.list_tools(cursor=cursor)
        tools.extend(page.tools)
        if page.next_cursor is None or page.next_cursor == cursor:
            return tools
        cursor = page.next_cursor
    log.warning("%s lists more than %d pages of tools; the rest are left out", _server(endpoint), MAX_PAGES)
    return tools


def _tool_infos(endpoint: Endpoint, listed: list[mcp_types.Tool]) -> list[ToolInfo]:
    infos: dict[str, ToolInfo] = {}
    for tool in listed:
        info = tool_info(tool)
        if info is None:
            log.warning("%s: tool %r skipped: %s", _server(endpoint), tool.name[:200], _unusable(tool))
        elif info.name in infos:
            log.warning("%s: tool %r skipped: listed twice", _server(endpoint), info.name)
        elif len(infos) == MAX_TOOLS:
            log.warning("%s lists more than %d tools; the rest are left out", _server(endpoint), MAX_TOOLS)
            break
        else:
            infos[info.name] = info
    return list(infos.values())


def tool_info(tool: mcp_types.Tool) -> ToolInfo | None:
    """The tool as the service keeps it, or None when a model could not be given it.

    MCP's annotation defaults: not read-only; a tool that is not read-only is destructive
    unless it says otherwise (``destructiveHint`` means something only then).
    """
    if _unusable(tool):
        return None
    hints = tool.annotations
    read_only = bool(hints and hints.read_only_hint)
    destructive = hints.destructive_hint if hints and hints.destructive_hint is not None else not read_only
    description = (tool.description or "")[:MAX_DESCRIPTION_CHARS]
    return ToolInfo(tool.name, description, tool.input_schema, read_only=read_only, destructive=destructive)


def _unusable(tool: mcp_types.Tool) -> str:
    """Why a model could not be given the tool ("" if it can)."""
    if not TOOL_NAME.fullmatch(tool.name):
        return "its name is not 1 to 128 letters, digits, '_', '-' or '.'"
    schema = tool.input_schema
    if not isinstance(schema, dict) or schema.get("type") != "object":
        return "its input schema is not an object's"
    properties, required = schema.get("properties", {}), schema.get("required", [])
    if not isinstance(properties, dict) or not all(isinstance(p, dict) for p in properties.values()):
        return "its input schema's properties are not an object of schemas"
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        return "its input schema's required is not a list of names"
    try:
        size = len(json.dumps(schema))
    except (TypeError, ValueError):
        return "its input schema is not JSON"
    if size > MAX_SCHEMA_CHARS:
        return f"its input schema is longer than {MAX_SCHEMA_CHARS} characters"
    return ""


# --------------------------------------------------------------------------------- calling


class Sessions:
    """The MCP sessions of one agent turn: ``async with Sessions(policy) as sessions:``.

    A server's session opens on its first call and is shared by the calls that follow (and
    by concurrent ones); one that failed is opened again by the next call. Leaving the block
    closes them all, at once, each within :data:`CLOSE_SECONDS` or so.
    """

    def __init__(self, policy: outbound.Policy) -> None:
        self._policy = policy
        self._sessions: dict[Hashable, _Session] = {}

    async def __aenter__(self) -> Sessions:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        sessions = list(self._sessions.values())
        self._sessions.clear()
        await asyncio.gather(*(session.close() for session in sessions))

    async def call(
        self, endpoint: Endpoint, tool: str, arguments: dict[str, Any], *, timeout: float, max_chars: int
    ) -> ToolOutcome:
        """Call ``tool`` with ``arguments`` within ``timeout`` seconds (connecting included), its
        text cut to ``max_chars``. Never raises for the server's failure: the outcome is an error."""
        try:
            with anyio.fail_after(timeout):
                client = await self._session(endpoint).client()
                result = await client.call_tool(tool, arguments)
        except TimeoutError:
            return _failed(f"The tool {tool} of {_server(endpoint)} did not answer within {timeout:g} s.")
        except ToolServerError as error:
            return _failed(f"The tool {tool} could not be called: {error}.")
        except Exception as error:  # anything the server did (or did not) do is the call's outcome
            return _failed(f"The tool {tool} of {_server(endpoint)} failed: {describe(error)}.")
        return ToolOutcome(cut(result_text(result), max_chars), is_error=result.is_error)

    def _session(self, endpoint: Endpoint) -> _Session:
        key = _key(endpoint)
        session = self._sessions.get(key)
        if session is None or session.ended:
            session = self._sessions[key] = _Session(endpoint, self._policy, prime=True)
        return session


def _failed(text: str) -> ToolOutcome:
    return ToolOutcome(text, is_error=True)


def _key(endpoint: Endpoint) -> Hashable:
    return (
        endpoint.trusted,
        endpoint.name,
        endpoint.url,
        tuple(sorted(endpoint.headers.items())),
        endpoint.command,
        endpoint.args,
        tuple(sorted(endpoint.env.items())),
    )


def result_text(result: mcp_types.CallToolResult) -> str:
    """What the model reads of a result: its text parts, other parts described briefly, and
    its structured content as JSON when it has no text."""
    parts = [_part_text(block) for block in result.content]
    if not any(isinstance(block, mcp_types.TextContent) for block in result.content):
        if result.structured_content is not None:
            parts.append(json.dumps(result.structured_content, ensure_ascii=False))
    text = "\n".join(part for part in parts if part)
    return text or ("(the tool failed without saying why)" if result.is_error else "(the tool returned nothing)")


def _part_text(block: mcp_types.ContentBlock) -> str:
    if isinstance(block, mcp_types.TextContent):
        return block.text
    if isinstance(block, mcp_types.ImageContent | mcp_types.AudioContent):
        return f"[{block.mime_type}, {_decoded_size(block.data)} bytes]"
    if isinstance(block, mcp_types.ResourceLink):
        return f"[resource link: {block.uri}]"
    resource = block.resource
    if isinstance(resource, mcp_types.TextResourceContents):
        return f"[resource {resource.uri}]\n{resource.text}"
    return f"[resource {resource.uri}, {resource.mime_type or 'binary'}, {_decoded_size(resource.blob)} bytes]"


def _decoded_size(data: str) -> int:
    """Bytes that base64 text decodes to (without decoding it)."""
    data = data.strip()
    return len(data) * 3 // 4 - len(data) + len(data.rstrip("="))


def cut(text: str, max_chars: int) -> str:
    """``text`` if it fits in ``max_chars``, else its start and a note of how much was cut, within ``max_chars``."""
    if len(text) <= max_chars:
        return text
    keep = max_chars
    while True:
        note = f"\n[cut: {len(text) - keep:,} more characters of {len(text):,}]"
        if keep + len(note) <= max_chars or keep == 0:
            return text[:keep] + note
        keep = max(0, max_chars - len(note))


# --------------------------------------------------------------------------------- a session


class _Session:
    """One MCP session, held by a task of its own that enters the SDK's contexts, waits until
    :meth:`close`, and exits them (see the module's docstring)."""

    def __init__(self, endpoint: Endpoint, policy: outbound.Policy, *, prime: bool = False) -> None:
        """``prime``: list the tools once open, before any call (every page; else the SDK
        lists the first page before the first call, and each concurrent first call would)."""
        self.endpoint = endpoint
        self._prime = prime
        loop = asyncio.get_running_loop()
        self._client: asyncio.Future[Client] = loop.create_future()
        self._client.add_done_callback(_retrieve)
        self._closing = asyncio.Event()
        self._task = loop.create_task(self._hold(policy), name=f"mcp session: {endpoint.name}")
        _HELD.add(self._task)
        self._task.add_done_callback(_released)

    @property
    def ended(self) -> bool:
        """Whether the session can no longer serve calls (it failed, or was closed)."""
        return self._task.done() or self._closing.is_set()

    async def client(self) -> Client:
        """The session's client once open (:class:`ToolServerError` if it cannot be opened).
        A caller that gives up waiting leaves the opening to the others."""
        return await asyncio.shield(self._client)

    async def close(self) -> None:
        """Exit the SDK's contexts, within :data:`CLOSE_SECONDS`; past that, cancel the task,
        and past that again leave it to end on its own."""
        self._closing.set()
        if not self._client.done():  # still opening: nothing to close in order, stop it
            self._task.cancel()
        if await _ends(self._task, CLOSE_SECONDS):
            return
        self._task.cancel()
        if not await _ends(self._task, CLOSE_SECONDS):
            log.warning(
                "%s: its session did not close within %g s; left to end on its own",
                _server(self.endpoint),
                2 * CLOSE_SECONDS,
            )

    async def _hold(self, policy: outbound.Policy) -> None:
        try:
            async with AsyncExitStack() as stack:
                client = await _connect(self.endpoint, policy, stack)
                if self._prime:  # the SDK checks a result against its tool's listed output schema
                    await _all_tools(client, self.endpoint)
                self._client.set_result(client)
                await self._closing.wait()
        except Exception as error:  # the server's failure: the calls waiting on it are told
            reason = describe(error)
            if not self._client.done():
                self._client.set_exception(
                    ToolServerError(f"no MCP session could be opened with {_server(self.endpoint)}: {reason}")
                )
            elif not self._closing.is_set():
                log.info("%s: its session ended: %s", _server(self.endpoint), reason)
        finally:
            if not self._client.done():  # cancelled while opening
                self._client.set_exception(ToolServerError(f"{_server(self.endpoint)}: the session was closed"))


async def _connect(endpoint: Endpoint, policy: outbound.Policy, stack: AsyncExitStack) -> Client:
    """An open client of ``endpoint``, its contexts entered on ``stack``."""
    if endpoint.command is not None:
        parameters = StdioServerParameters(command=endpoint.command, args=list(endpoint.args), env=endpoint.env or None)
        transport = stdio_client(parameters)
    elif endpoint.url is not None:
        http = await stack.enter_async_context(_http_client(endpoint, policy))
        transport = streamable_http_client(endpoint.url, http_client=http, max_sse_event_size=MAX_RESPONSE_BYTES)
    else:
        raise ToolServerError(f"{_server(endpoint)} has neither a url nor a command")
    client = Client(transport, client_info=CLIENT_INFO, cache=None)
    return await stack.enter_async_context(client)


def _http_client(endpoint: Endpoint, policy: outbound.Policy) -> httpx2.AsyncClient:
    """The HTTP client of a server: a user's checked by the outbound rule, the operator's plain."""
    options: dict[str, Any] = {
        "headers": endpoint.headers,
        # Calls are bounded by their own timeouts; a response stream may stay open between events.
        "timeout": httpx2.Timeout(CONNECT_SECONDS, read=None),
        "event_hooks": {"response": [_capped]},
    }
    if endpoint.trusted:
        return httpx2.AsyncClient(verify=outbound.ssl_context(), trust_env=False, follow_redirects=False, **options)
    outbound.parse_url(endpoint.url or "")
    return outbound.async_client(policy, **options)


async def _capped(response: httpx2.Response) -> None:
    """An HTTP response hook: its body is read at most :data:`MAX_RESPONSE_BYTES` far."""
    response.stream = _CappedStream(response.stream)


class _CappedStream(httpx2.AsyncByteStream):
    def __init__(self, stream: Any) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        read = 0
        async for chunk in self._stream:
            read += len(chunk)
            if read > MAX_RESPONSE_BYTES:
                raise httpx2.ReadError(f"the server sent more than {MAX_RESPONSE_BYTES // 1_048_576} MB at once")
            yield chunk

    async def aclose(self) -> None:
        await self._stream.aclose()


# --------------------------------------------------------------------------------- helpers


def _server(endpoint: Endpoint) -> str:
    """The server, as messages name it: a user's with its URL (theirs to see); the operator's by
    name only (its address or command is not the users' to see, in an error a call returns)."""
    if endpoint.trusted:
        return f"the tool server {endpoint.name}"
    return f"the tool server {endpoint.name} ({endpoint.url})"


def describe(error: BaseException) -> str:
    """What went wrong, in a sentence for a person (or a model) to read."""
    if isinstance(error, BaseExceptionGroup):
        inner = [e for e in error.exceptions if not isinstance(e, asyncio.CancelledError)]
        return describe(inner[0] if inner else error.exceptions[0])
    if isinstance(error, outbound.OutboundURLError | ToolServerError):
        return str(error)
    if isinstance(error, MCPError):
        if error.code == mcp_types.CONNECTION_CLOSED:
            return "the connection closed before it answered"
        if error.code == mcp_types.PARSE_ERROR:
            return "it answered what is not MCP (not JSON-RPC)"
        return f"{_line(error.message)} (MCP error {error.code})"
    if isinstance(error, ValidationError):
        return "it answered what is not valid MCP"
    if isinstance(error, httpx2.TimeoutException):
        return "the connection timed out"
    if isinstance(error, httpx2.TransportError):
        return f"the connection failed: {error}" if str(error) else f"the connection failed ({type(error).__name__})"
    if isinstance(error, FileNotFoundError):
        return f"its command was not found: {error.filename}"
    return f"{type(error).__name__}: {_line(str(error))}" if str(error) else type(error).__name__


def _line(text: str) -> str:
    """The first line of an error's text, at most 300 characters."""
    line = text.strip().split("\n", 1)[0]
    return line if len(line) <= 300 else line[:300] + "..."


async def _ends(task: asyncio.Task[None], seconds: float) -> bool:
    """Whether ``task`` ends within ``seconds`` (it is not cancelled if it does not)."""
    done, _ = await asyncio.wait({task}, timeout=seconds)
    return bool(done)


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a future's exception seen: callers that gave up waiting leave it unread."""
    if not future.cancelled():
        future.exception()


def _released(task: asyncio.Task[None]) -> None:
    _HELD.discard(task)
    _retrieve(task)
