"""whop-sdk 2.6.0 (Fern) behind the scenarios' interface."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import whop_sdk
from sdks import Raw, require_version
from sdks import Sdk as Base
from whop_sdk import Whop
from whop_sdk.core.api_error import ApiError
from whop_sdk.environment import WhopEnvironment

require_version(whop_sdk, "2.6.0")


class Sdk(Base):
    errors: ClassVar[dict[int, type[Exception]]] = {
        400: whop_sdk.BadRequestError,
        401: whop_sdk.UnauthorizedError,
        403: whop_sdk.ForbiddenError,
        404: whop_sdk.NotFoundError,
        409: whop_sdk.ConflictError,
        422: whop_sdk.UnprocessableEntityError,
    }
    company_field = "current_account_id"
    status_error = ApiError

    def __init__(self, base_url: str, key: str) -> None:
        self.client = Whop(environment=WhopEnvironment(api=base_url, vault=base_url), token=key, max_retries=0)
        self.chats = self.client.ai_chats

    def create_args(self, headers: dict[str, str] | None, fields: dict[str, Any]) -> dict[str, Any]:
        # Per request, not the constructor's idempotency_key=, which would repeat one key on every call.
        options = {"additional_headers": headers} if headers else None
        return {**self.rename(fields), "request_options": options}

    def raw(self, response: Any) -> Raw:
        return Raw(response.data, response.status_code, response.headers, response.response.json())

    def list(self, **params: Any) -> Any:
        return self.chats.list(**params)

    def pages(self, **params: Any) -> Iterator[tuple[list[str], bool | None]]:
        for page in self.list(**params).iter_pages():
            yield [chat.id for chat in page.items or []], page.response.page_info.has_next_page

    def agent_of(self, chat: Any) -> Any:
        return chat.agent_identifier
