"""whop-sdk 2.6.0 (Fern) behind the scenarios' interface."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import whop_sdk
from whop_sdk import Whop
from whop_sdk.core.api_error import ApiError
from whop_sdk.environment import WhopEnvironment

from sdks import Raw, require_version
from sdks import Sdk as Base

require_version(whop_sdk, "2.6.0")


def _rename_company(fields: dict[str, Any]) -> dict[str, Any]:
    fields = dict(fields)
    if "company_id" in fields:
        fields["current_account_id"] = fields.pop("company_id")
    return fields


def _options(headers: dict[str, str] | None) -> Any:
    return {"additional_headers": headers} if headers else None


class Sdk(Base):
    name = "v2"
    errors = {
        400: whop_sdk.BadRequestError,
        401: whop_sdk.UnauthorizedError,
        403: whop_sdk.ForbiddenError,
        404: whop_sdk.NotFoundError,
        409: whop_sdk.ConflictError,
        422: whop_sdk.UnprocessableEntityError,
    }
    status_error = ApiError

    def __init__(self, base_url: str, key: str) -> None:
        self.client = Whop(environment=WhopEnvironment(api=base_url, vault=base_url), token=key, max_retries=0)
        self.chats = self.client.ai_chats

    def create_raw(self, *, headers: dict[str, str] | None = None, **fields: Any) -> Raw:
        response = self.chats.with_raw_response.create(**_rename_company(fields), request_options=_options(headers))
        return Raw(response.data, response.status_code, response.headers, response.response.json())

    def retrieve(self, chat_id: str) -> Any:
        return self.chats.retrieve(chat_id)

    def update(self, chat_id: str, **fields: Any) -> Any:
        return self.chats.update(chat_id, **_rename_company(fields))

    def delete(self, chat_id: str) -> Any:
        return self.chats.delete(chat_id)

    def list(self, **params: Any) -> Any:
        return self.chats.list(**params)

    def pages(self, **params: Any) -> Iterator[tuple[list[str], bool | None]]:
        for page in self.list(**params).iter_pages():
            yield [chat.id for chat in page.items or []], page.response.page_info.has_next_page

    def agent_of(self, chat: Any) -> Any:
        return chat.agent_identifier
