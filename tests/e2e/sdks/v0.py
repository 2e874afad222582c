"""whop-sdk 0.0.41 (Stainless) behind the scenarios' interface."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import whop_sdk
from sdks import Raw, require_version
from sdks import Sdk as Base
from whop_sdk import Whop

require_version(whop_sdk, "0.0.41")


class Sdk(Base):
    errors: ClassVar[dict[int, type[Exception]]] = {
        400: whop_sdk.BadRequestError,
        401: whop_sdk.AuthenticationError,
        403: whop_sdk.PermissionDeniedError,
        404: whop_sdk.NotFoundError,
        409: whop_sdk.ConflictError,
        422: whop_sdk.UnprocessableEntityError,
    }
    company_field = "current_company_id"
    status_error = whop_sdk.APIStatusError

    def __init__(self, base_url: str, key: str) -> None:
        self.client = Whop(api_key=key, base_url=base_url, max_retries=0)
        self.chats = self.client.ai_chats

    def create_args(self, headers: dict[str, str] | None, fields: dict[str, Any]) -> dict[str, Any]:
        args = self.rename(fields)
        # This client has no agent_identifier parameter: its users send it as an extra body field.
        if "agent_identifier" in args:
            args["extra_body"] = {"agent_identifier": args.pop("agent_identifier")}
        return {**args, "extra_headers": headers}

    def raw(self, response: Any) -> Raw:
        return Raw(response.parse(), response.status_code, dict(response.headers), response.json())

    def list(self, *, agent_identifier: str | None = None, **params: Any) -> Any:
        # No agent_identifier parameter either: it goes in extra_query, which later pages keep.
        extra_query = {"agent_identifier": agent_identifier} if agent_identifier is not None else None
        return self.chats.list(**params, extra_query=extra_query)

    def pages(self, **params: Any) -> Iterator[tuple[list[str], bool | None]]:
        for page in self.list(**params).iter_pages():
            # The page model only declares end_cursor; the rest of page_info is kept as extras.
            yield [chat.id for chat in page.data], getattr(page.page_info, "has_next_page", None)

    def agent_of(self, chat: Any) -> Any:
        # Not a field of this client's model: pydantic keeps it as an extra attribute.
        return (chat.model_extra or {}).get("agent_identifier")
