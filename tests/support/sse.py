"""Reading server-sent event streams, with the ``httpx-sse`` library.

``httpx-sse`` is written for httpx; it reads a response only through ``iter_text``, which
httpx2's responses have too, so it works on them unchanged (it needs ``httpx`` importable
for its types and its error class, which is why the ``test`` extra pins ``httpx`` as well).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import httpx2
from httpx_sse import EventSource, ServerSentEvent

from aichats.api.schemas import Badges

if TYPE_CHECKING:
    import httpx


class StreamDeadline(AssertionError):
    """The stream went on past its deadline."""


class _Cut:
    """A response read until a deadline. The server sends a keep-alive comment every 15 s,
    so a stream that sends no events never times out on reading alone: the deadline is
    checked on each piece of text, comments included."""

    def __init__(self, response: httpx2.Response, deadline: float) -> None:
        self.response, self.deadline = response, deadline

    @property
    def headers(self) -> httpx2.Headers:
        return self.response.headers

    def iter_text(self) -> Iterator[str]:
        for text in self.response.iter_text():
            if time.monotonic() > self.deadline:
                raise StreamDeadline("the stream went on past its deadline")
            yield text


def events(response: httpx2.Response, timeout: float | None = None) -> Iterator[ServerSentEvent]:
    """Each event of a streamed response, as it arrives (comments, the keep-alives, skipped).

    With ``timeout``, raises :class:`StreamDeadline` once the stream has run that long.
    """
    source = response if timeout is None else _Cut(response, time.monotonic() + timeout)
    # httpx-sse types its argument as httpx's Response; it only reads ``headers`` and ``iter_text``.
    return EventSource(cast("httpx.Response", source)).iter_sse()


@dataclass(frozen=True)
class Event:
    """An event of a chat's stream: its id, its type and its decoded JSON data."""

    id: int
    type: str
    data: Any


def chat_events(response: httpx2.Response, timeout: float | None = None) -> Iterator[Event]:
    """The events of a chat's stream (``/ai_chats/{id}/events``), data decoded."""
    for sse in events(response, timeout):
        if sse.data:
            yield Event(int(sse.id), sse.event, json.loads(sse.data))


def read_events(
    client: httpx2.Client,
    chat_id: str,
    *,
    until: Callable[[Event], bool],
    last_event_id: int | None = None,
    timeout: float = 60.0,
) -> list[Event]:
    """Read the chat's SSE stream until an event satisfies ``until`` (it included)."""
    headers = {} if last_event_id is None else {"Last-Event-ID": str(last_event_id)}
    found: list[Event] = []
    with client.stream(
        "GET", f"/ai_chats/{chat_id}/events", headers=headers, timeout=httpx2.Timeout(timeout, connect=5)
    ) as response:
        assert response.status_code == 200, response.read().decode()
        assert response.headers["content-type"].startswith("text/event-stream")
        try:
            for event in chat_events(response, timeout):
                found.append(event)
                if until(event):
                    return found
        except StreamDeadline:
            raise AssertionError(f"no closing event within {timeout:g} s; got {[e.type for e in found]}") from None
    raise AssertionError(f"the event stream ended early; got {[e.type for e in found]}")


def events_within(client: httpx2.Client, chat_id: str, last_event_id: int, seconds: float) -> list[Event]:
    """Every event the stream sends after ``last_event_id`` within ``seconds``."""
    found: list[Event] = []

    def keep(event: Event) -> bool:
        found.append(event)
        return False

    try:
        read_events(client, chat_id, until=keep, last_event_id=last_event_id, timeout=seconds)
    except (httpx2.ReadTimeout, AssertionError):
        pass
    return found


def badge_events(response: httpx2.Response) -> Iterator[dict[str, Any]]:
    """The data of each ``badges`` event of a notifications stream (pings skipped)."""
    for sse in events(response):
        if sse.event == "badges":
            yield Badges.model_validate_json(sse.data).model_dump()
