"""The built-in tools: the time, a web page as text, and the chat's own schedule.

They run in the service's process, with the chat they serve (:class:`Context`). Their
answers are text for the model; a wrong argument is an error the model reads
(:class:`ToolFailure`), never an exception to the turn.

The schedule tools change only the chat's own schedule, with the same checks as
``PUT /ai_chats/{id}/schedule`` (:func:`aichats.services.schedules.put_schedule`): the user
sees the change in the chat and can undo it, so in a chat they need no approval; in a
scheduled run they follow the schedule's ``allow_changes`` like any tool that changes things.
"""

from __future__ import annotations

import html.parser
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urljoin

import httpx2

from aichats import outbound
from aichats.config import Settings
from aichats.errors import NotFound, ServiceError
from aichats.services import chats, schedules
from aichats.storage.database import Database
from aichats.tools import ToolInfo, url_policy

MAX_REDIRECTS = 5


class ToolFailure(Exception):
    """A built-in tool could not do what it was asked: the message goes to the model."""


@dataclass(frozen=True, slots=True)
class Context:
    """What a built-in tool acts on: the turn's chat, its database and settings."""

    db: Database
    settings: Settings
    chat_pk: int
    chat_id: str


Run = Callable[[Context, dict[str, Any]], Awaitable[str]]


@dataclass(frozen=True, slots=True)
class Builtin:
    info: ToolInfo
    run: Run


def _object(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required), "additionalProperties": False}


def _text(arguments: dict[str, Any], name: str, *, required: bool = False) -> str | None:
    value = arguments.get(name)
    if value is None:
        if required:
            raise ToolFailure(f"the argument {name!r} is required")
        return None
    if not isinstance(value, str) or not value.strip():
        raise ToolFailure(f"the argument {name!r} must be a non-empty string")
    return value.strip()


# ----------------------------------------------------------------------------- the time


async def current_time(context: Context, arguments: dict[str, Any]) -> str:
    name = _text(arguments, "timezone")
    if name is None:
        try:
            name = (await schedules.get_schedule(context.db, context.chat_pk))["timezone"]
        except NotFound:
            name = "UTC"
    try:
        zone = schedules.zone(name)
    except ServiceError as error:
        raise ToolFailure(error.message) from None
    now = datetime.now(UTC).astimezone(zone)
    return f"{now:%A %Y-%m-%d %H:%M:%S} in {zone.key} (UTC{now:%z}); ISO 8601: {now.isoformat(timespec='seconds')}"


# ------------------------------------------------------------------------ a web page


class _TextOfHTML(html.parser.HTMLParser):
    """The readable text of an HTML page: no scripts, styles or markup; a line per block."""

    SKIPPED = frozenset({"script", "style", "noscript", "template", "svg", "head"})
    BLOCKS = frozenset(
        {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "section", "article", "header", "footer",
         "table", "ul", "ol", "pre", "blockquote", "title"}
    )  # fmt: skip

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title = ""
        self._skipping = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        elif tag in self.SKIPPED:
            self._skipping += 1
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag in self.SKIPPED:
            self._skipping = max(0, self._skipping - 1)
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        elif not self._skipping:
            self.parts.append(data)


def html_text(page: str) -> str:
    """The page's title and text, whitespace tidied."""
    parser = _TextOfHTML()
    parser.feed(page)
    parser.close()
    lines = (re.sub(r"[ \t\r\f\v]+", " ", line).strip() for line in "".join(parser.parts).split("\n"))
    text = "\n".join(line for line in lines if line)
    title = " ".join(parser.title.split())
    return f"{title}\n\n{text}" if title else text


async def fetch_url(context: Context, arguments: dict[str, Any]) -> str:
    url = _text(arguments, "url", required=True)
    assert url is not None
    settings = context.settings
    policy = url_policy(allow_private=settings.tools_allow_private_urls)
    async with outbound.async_client(policy, timeout=settings.tool_timeout_seconds) as client:
        for _ in range(MAX_REDIRECTS + 1):
            try:
                outbound.parse_url(url)  # every hop: the checked client then checks where it connects
                async with client.stream("GET", url, headers={"Accept": "text/html, text/plain, */*"}) as response:
                    if response.is_redirect and "location" in response.headers:
                        url = urljoin(url, response.headers["location"])
                        continue
                    body = bytearray()
                    async for chunk in response.aiter_bytes():
                        body += chunk
                        if len(body) > settings.fetch_max_bytes:
                            del body[settings.fetch_max_bytes :]
                            break
                    return _page(url, response, bytes(body), settings.fetch_max_bytes)
            except outbound.OutboundURLError as error:
                raise ToolFailure(f"not fetched: {error.message}") from None
            except httpx2.HTTPError as error:
                raise ToolFailure(f"{url} could not be fetched: {error!r}") from None
    raise ToolFailure(f"more than {MAX_REDIRECTS} redirects")


def _page(url: str, response: httpx2.Response, body: bytes, limit: int) -> str:
    kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
    head = f"{response.status_code} {url}"
    if len(body) >= limit:
        head += f" (the first {limit} bytes)"
    if kind and not (
        kind.startswith("text/") or kind in ("application/json", "application/xml", "application/xhtml+xml")
    ):
        return f"{head}\n[{kind} content, {len(body)} bytes: not text]"
    text = body.decode(response.encoding or "utf-8", errors="replace")
    if kind in ("text/html", "application/xhtml+xml") or (not kind and "<html" in text[:1000].lower()):
        text = html_text(text)
    return f"{head}\n\n{text}"


# ------------------------------------------------------------------- the chat's schedule

_SCHEDULE_TIMING = {
    "cron": {"type": "string", "description": "5-field cron in the schedule's time zone, e.g. '0 9 * * 1'."},
    "interval_seconds": {"type": "integer", "description": "Seconds between runs (instead of a cron)."},
    "run_at": {"type": "string", "description": "One run at this ISO 8601 instant (instead of a cron)."},
}


async def get_schedule(context: Context, arguments: dict[str, Any]) -> str:
    try:
        row = await schedules.get_schedule(context.db, context.chat_pk)
    except NotFound:
        return "This chat has no schedule."
    return _described(row, context.chat_id)


def _described(row: Any, chat_id: str) -> str:
    shown = schedules.schedule_json(row, chat_id)
    state = "active" if shown["active"] else "paused"
    times = ", ".join(shown["next_run_times"][:3]) or "none"
    return (
        f"Schedule ({state}): {shown['description']}. Prompt: {shown['prompt']!r}. Time zone: {shown['timezone']}. "
        f"Next runs: {times}."
    )


async def set_schedule(context: Context, arguments: dict[str, Any]) -> str:
    """Create or change the schedule; what is left out stays as it is (a new one needs a
    prompt, a time zone and its timing)."""
    try:
        current: Any = await schedules.get_schedule(context.db, context.chat_pk)
    except NotFound:
        current = None
    kinds = [kind for kind in _SCHEDULE_TIMING if arguments.get(kind) is not None]
    if len(kinds) > 1:
        raise ToolFailure("give one of cron, interval_seconds or run_at, not several")
    interval = arguments.get("interval_seconds")
    if interval is not None and (not isinstance(interval, int) or isinstance(interval, bool)):
        raise ToolFailure("interval_seconds must be an integer")
    prompt = _text(arguments, "prompt") or (current and current["prompt"])
    zone = _text(arguments, "timezone") or (current and current["timezone"])
    if not prompt or not zone:
        raise ToolFailure("a new schedule needs a prompt and a timezone (IANA, e.g. Europe/Paris)")
    if kinds:
        timing = {kind: arguments[kind] if kind == kinds[0] else None for kind in _SCHEDULE_TIMING}
        timing["run_at"] = _text(arguments, "run_at") if kinds[0] == "run_at" else None
        timing["cron"] = _text(arguments, "cron") if kinds[0] == "cron" else None
    elif current is not None and current["cron"] is not None:
        timing = {"cron": current["cron"], "interval_seconds": None, "run_at": None}
    elif current is not None and current["interval_seconds"] is not None:
        timing = {"cron": None, "interval_seconds": current["interval_seconds"], "run_at": None}
    else:
        raise ToolFailure("give when it runs: cron, interval_seconds or run_at")
    kept_tools = chats.tools_of(current["tools"]) if current is not None else None
    spec = schedules.ScheduleSpec(
        timezone=zone,
        prompt=prompt,
        active=bool(current["active"]) if current is not None else True,  # pausing is pause_schedule's
        tools=None if kept_tools is None else tuple(kept_tools),
        allow_changes=bool(current["allow_changes"]) if current is not None else False,
        **timing,
    )
    minimum = context.settings.schedule_min_interval_seconds
    try:
        row = await schedules.put_schedule(
            context.db, context.chat_pk, spec, min_interval_seconds=minimum,
            max_per_user=context.settings.max_schedules_per_user,
        )  # fmt: skip
    except ServiceError as error:
        raise ToolFailure(error.message) from None
    return "Saved. " + _described(row, context.chat_id)


async def _set_active(context: Context, active: bool) -> str:
    try:
        cap = context.settings.max_schedules_per_user
        row = await schedules.set_active(context.db, context.chat_pk, active, max_per_user=cap)
    except ServiceError as error:
        raise ToolFailure(error.message) from None
    return ("Resumed. " if active else "Paused. ") + _described(row, context.chat_id)


async def pause_schedule(context: Context, arguments: dict[str, Any]) -> str:
    return await _set_active(context, False)


async def resume_schedule(context: Context, arguments: dict[str, Any]) -> str:
    return await _set_active(context, True)


async def delete_schedule(context: Context, arguments: dict[str, Any]) -> str:
    try:
        await schedules.delete_schedule(context.db, context.chat_pk)
    except NotFound:
        return "This chat had no schedule."
    return "The schedule was deleted."


def _builtin(name: str, description: str, run: Run, schema: dict[str, Any], *, changes: bool = False) -> Builtin:
    info = ToolInfo(name, description, schema, read_only=not changes, destructive=False)
    return Builtin(info, run)


BUILTIN: dict[str, Builtin] = {
    tool.info.name: tool
    for tool in (
        _builtin(
            "current_time",
            "The current date, time and weekday in a time zone (default: the chat's schedule's, else UTC).",
            current_time,
            _object({"timezone": {"type": "string", "description": "IANA time zone, e.g. Europe/Paris."}}),
        ),
        _builtin(
            "fetch_url",
            "Fetch a public web page (http or https) and return its text.",
            fetch_url,
            _object({"url": {"type": "string", "description": "The page's URL."}}, ("url",)),
        ),
        _builtin("get_schedule", "This chat's schedule: when it runs and what it asks.", get_schedule, _object({})),
        _builtin(
            "set_schedule",
            "Create or change this chat's schedule: a prompt sent to you at each run, a time zone, and one of "
            "cron, interval_seconds or run_at. What you leave out of a change stays as it is.",
            set_schedule,
            _object(
                {
                    "prompt": {"type": "string", "description": "What to ask at each run."},
                    "timezone": {"type": "string", "description": "IANA time zone, e.g. Europe/Paris."},
                    **_SCHEDULE_TIMING,
                }
            ),
            changes=True,
        ),
        _builtin("pause_schedule", "Pause this chat's schedule.", pause_schedule, _object({}), changes=True),
        _builtin("resume_schedule", "Resume this chat's paused schedule.", resume_schedule, _object({}), changes=True),
        _builtin("delete_schedule", "Delete this chat's schedule.", delete_schedule, _object({}), changes=True),
    )
}
