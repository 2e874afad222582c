"""Tools the agent calls during a turn: built in, or on MCP servers (the operator's and the user's).

What every part shares is here: a tool as its server lists it (:class:`ToolInfo`), how to
reach an MCP server (:class:`Endpoint`), and what a call gives back (:class:`ToolOutcome`).

- :mod:`aichats.tools.mcp` speaks MCP (the official SDK): list a server's tools, call them;
- :mod:`aichats.tools.operator` keeps the operator's servers' tool lists (``AICHATS_TOOL_SERVERS``);
- :mod:`aichats.tools.builtin` holds the built-in tools;
- :mod:`aichats.tools.toolbox` gathers what one turn may use and runs the calls.

A tool's failure is never an exception to the turn: it is an outcome with ``is_error``, which
the model is given like any result, so that it can answer anyway.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aichats import outbound


def url_policy(*, allow_private: bool) -> outbound.Policy:
    """The outbound rules of every URL a tool reaches (a user's MCP server, ``fetch_url``):
    private addresses only with ``AICHATS_TOOLS_ALLOW_PRIVATE_URLS``."""
    return outbound.Policy(allow_private=allow_private, setting="AICHATS_TOOLS_ALLOW_PRIVATE_URLS")


@dataclass(frozen=True, slots=True)
class ToolInfo:
    """A tool as its server lists it: name, description, JSON Schema of its arguments, and
    the MCP annotations that say whether it changes things (MCP's defaults: a tool is not
    read-only, and a tool that is not read-only is destructive)."""

    name: str
    description: str
    input_schema: dict[str, Any]
    read_only: bool = False
    destructive: bool = True

    @property
    def changes_things(self) -> bool:
        """Whether a call needs the user's approval (in a chat) or the schedule's leave (in a scheduled run)."""
        return self.destructive or not self.read_only

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "input_schema": self.input_schema,
            "read_only": self.read_only,
            "destructive": self.destructive,
        }

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> ToolInfo:
        return cls(value["name"], value["description"], value["input_schema"], value["read_only"], value["destructive"])


@dataclass(frozen=True, slots=True)
class Endpoint:
    """How to reach one MCP server: Streamable HTTP (``url``, ``headers``) or stdio (``command``).

    ``trusted`` servers (the operator's) skip the outbound URL rules; a user's never do.
    """

    name: str
    url: str | None = None
    headers: dict[str, str] = field(default_factory=dict, repr=False)  # credentials: never in a log line
    command: str | None = None
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    trusted: bool = False


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    """What a call gave back: text for the model (cut to a limit), and whether it is an error."""

    text: str
    is_error: bool = False


class ToolServerError(Exception):
    """An MCP server could not be reached, or answered what is not MCP: the message says which."""
