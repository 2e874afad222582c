"""One interface over the two published clients, so each scenario is written once.

``drive.py`` loads ``sdks.v0`` (whop-sdk 0.0.41, Stainless) or ``sdks.v2`` (whop-sdk 2.6.0,
Fern); both import as ``whop_sdk``, so only one can live in a process. Each module defines
``Sdk``, a subclass of :class:`Sdk` below that makes the calls the way that client's users
write them: the differences (field names, extra headers, a filter the client lacks) stay
inside the adapter, the calls themselves are the client's own.

Neutral names used by the scenarios:
``company_id`` is ``current_company_id`` (v0) or ``current_account_id`` (v2);
``agent_identifier`` is a real parameter in v2 and travels as ``extra_body`` /
``extra_query`` in v0, whose signatures predate it.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


@dataclass
class Raw:
    """A create call seen with its HTTP envelope."""

    chat: Any
    status: int
    headers: dict[str, str]
    json: Any

    def header(self, name: str) -> str | None:
        return {k.lower(): v for k, v in self.headers.items()}.get(name.lower())


class Sdk:
    """The scenarios' view of a client. Both clients spell the calls alike
    (``client.ai_chats.create(...)``, ``.with_raw_response.create(...)``, ``.retrieve(id)``...);
    an adapter supplies ``chats`` and the hooks where they differ."""

    #: HTTP status -> the typed exception this client raises for it.
    errors: dict[int, type[Exception]]
    #: The base class of every error raised for an HTTP status (each has .status_code and .body).
    status_error: type[Exception]
    #: The client's ``ai_chats`` resource.
    chats: Any
    #: The client's name for the chat's company/account context.
    company_field: str

    def __init__(self, base_url: str, key: str) -> None:
        raise NotImplementedError

    # Hooks each adapter provides.

    def create_args(self, headers: dict[str, str] | None, fields: dict[str, Any]) -> dict[str, Any]:
        """Neutral create fields (and per-request headers) as this client's keyword arguments."""
        raise NotImplementedError

    def raw(self, response: Any) -> Raw:
        """This client's raw-response wrapper as a :class:`Raw`."""
        raise NotImplementedError

    def list(self, **params: Any) -> Any:
        """The client's own auto-paginating list result (iterate it)."""
        raise NotImplementedError

    def pages(self, **params: Any) -> Iterator[tuple[list[str], bool | None]]:
        """Page by page as the client walks them: (ids on the page, page_info.has_next_page)."""
        raise NotImplementedError

    def agent_of(self, chat: Any) -> Any:
        raise NotImplementedError

    # The calls, made the same way with either client.

    def rename(self, fields: dict[str, Any]) -> dict[str, Any]:
        """``company_id`` under this client's name for it."""
        fields = dict(fields)
        if "company_id" in fields:
            fields[self.company_field] = fields.pop("company_id")
        return fields

    def create(self, *, headers: dict[str, str] | None = None, **fields: Any) -> Any:
        return self.chats.create(**self.create_args(headers, fields))

    def create_raw(self, *, headers: dict[str, str] | None = None, **fields: Any) -> Raw:
        return self.raw(self.chats.with_raw_response.create(**self.create_args(headers, fields)))

    def retrieve(self, chat_id: str) -> Any:
        return self.chats.retrieve(chat_id)

    def update(self, chat_id: str, **fields: Any) -> Any:
        return self.chats.update(chat_id, **self.rename(fields))

    def delete(self, chat_id: str) -> Any:
        return self.chats.delete(chat_id)


def require_version(module: Any, expected: str) -> None:
    """Stop at once if PYTHONPATH gave another whop_sdk than the adapter was written for."""
    if module.__version__ != expected:
        raise SystemExit(f"whop_sdk {module.__version__} from {module.__file__}; this adapter needs {expected}")


def load(name: str) -> type[Sdk]:
    """The adapter class for ``v0`` or ``v2``."""
    return importlib.import_module(f"sdks.{name}").Sdk
