"""The request bodies the API accepts: what a client may send, checked field by field
(a 422 names the field), then handed to the services as their own plain values
(:class:`~aichats.services.chats.NewChat`, :class:`~aichats.services.messages.NewMessage`...).

The rules of the domain stay in the services (the enums, the limits, a cron's or a time
zone's validity, the operator's minimum interval); these models only say how a body spells
them. The OpenAPI document's request schemas are these models'.
"""

from __future__ import annotations

from typing import Annotated, Any, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from pydantic.config import JsonDict

from aichats.services import notifications, tool_servers, webhooks
from aichats.services.chats import (
    MAX_REFERENCE_LENGTH,
    MAX_TITLE_LENGTH,
    UNSET,
    AgentIdentifier,
    ChatChanges,
    NewChat,
    NotificationPreference,
)
from aichats.services.messages import MAX_ATTACHMENTS, MAX_MESSAGE_LENGTH, MessageSource, NewMessage
from aichats.services.schedules import MAX_INTERVAL_SECONDS, MAX_PROMPT_LENGTH, ScheduleSpec
from aichats.services.webhooks import NewWebhook

Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_TITLE_LENGTH)]
Reference = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_REFERENCE_LENGTH, pattern=r"^[A-Za-z0-9_\-]+$")
]
Prompt = Annotated[str, StringConstraints(min_length=1, max_length=MAX_PROMPT_LENGTH)]
ToolName = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")]
TOOLS_DESCRIPTION = (
    "The tools the agent may use: `null` for every tool of the user (the default), else a list of names, each a "
    "tool server's name (all its tools), a tool's name as the model sees it (`server__tool`), `builtin` (every "
    "built-in tool) or a built-in tool's name; `[]`: no tools. Names that match nothing are kept (a server may "
    "be added later). See docs/tools.md."
)


def _tool_names(tools: list[str] | None) -> tuple[str, ...] | None:
    return None if tools is None else tuple(dict.fromkeys(tools))


# ----------------------------------------------------------------------------------- messages


class Attachment(BaseModel):
    """A previously uploaded file, by id."""

    model_config = ConfigDict(extra="forbid")
    id: Annotated[str, StringConstraints(max_length=64, pattern=r"^file_[A-Za-z0-9]+$")]


_NULL_MEANS_DEFAULT = ("message_attachments", "message_source", "agent_identifier")


class MessageInput(BaseModel):
    """A user message: the body of ``POST /ai_chats/{id}/messages``, and part of chat creation."""

    model_config = ConfigDict(extra="forbid")

    message_text: Annotated[str, StringConstraints(min_length=1, max_length=MAX_MESSAGE_LENGTH)] = Field(
        description="What the user says to the agent."
    )
    message_attachments: list[Attachment] = Field(default_factory=list, max_length=MAX_ATTACHMENTS)
    message_source: MessageSource = MessageSource.manual
    suggestion_type: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = Field(
        None, description="Which suggestion the user picked; only with `message_source: suggestion`."
    )

    @model_validator(mode="before")
    @classmethod
    def _nulls_are_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict):  # an explicit null means "the default" for these
            data = {k: v for k, v in data.items() if not (v is None and k in _NULL_MEANS_DEFAULT)}
        return data

    @model_validator(mode="after")
    def _check(self) -> Self:
        if not self.message_text.strip():
            raise ValueError("message_text must not be blank")
        if self.suggestion_type is not None and self.message_source is not MessageSource.suggestion:
            raise ValueError("suggestion_type is only allowed with message_source 'suggestion'")
        if self.message_source is MessageSource.schedule:
            raise ValueError("message_source 'schedule' is reserved for scheduled runs")
        return self

    def new_message(self) -> NewMessage:
        return NewMessage(
            text=self.message_text,
            file_ids=tuple(attachment.id for attachment in self.message_attachments),
            source=self.message_source,
            suggestion_type=self.suggestion_type,
        )


# -------------------------------------------------------------------------------------- chats


def _same_company(data: Any) -> Any:
    """``current_company_id`` (older clients) and ``current_account_id`` are one field."""
    if isinstance(data, dict) and "current_account_id" in data:
        account = data["current_account_id"]
        company = data.get("current_company_id", account)
        if company != account:
            raise ValueError("current_company_id and current_account_id name the same field; send one")
        data = {k: v for k, v in data.items() if k != "current_account_id"}
        data["current_company_id"] = account
    return data


class ChatCreate(MessageInput):
    """Body of ``POST /ai_chats``: the chat and its first message."""

    title: Title | None = None
    current_company_id: Reference | None = Field(
        None, description="The company (or account) the chat is about; `current_account_id` is accepted too."
    )
    agent_identifier: AgentIdentifier = AgentIdentifier.support
    tools: list[ToolName] | None = Field(
        None,
        max_length=100,
        description=TOOLS_DESCRIPTION + " An aichats extension; read and change it at `/ai_chats/{id}/tools`.",
    )

    @model_validator(mode="before")
    @classmethod
    def _merge_company(cls, data: Any) -> Any:
        return _same_company(data)

    def new_chat(self) -> NewChat:
        return NewChat(
            message=self.new_message(),
            title=self.title,
            current_company_id=self.current_company_id,
            agent_identifier=self.agent_identifier,
            tools=_tool_names(self.tools),
        )


class ChatUpdate(BaseModel):
    """Body of ``PATCH /ai_chats/{id}``: fields left out stay as they are."""

    model_config = ConfigDict(extra="forbid")

    title: Title | None = Field(None, description="New title; `null` clears it.")
    notification_preference: NotificationPreference | None = None
    current_company_id: Reference | None = Field(
        None, description="`current_account_id` is accepted too; `null` clears it."
    )

    _merge_company = model_validator(mode="before")(_same_company)

    @model_validator(mode="after")
    def _check(self) -> Self:
        if "notification_preference" in self.model_fields_set and self.notification_preference is None:
            raise ValueError("notification_preference must be 'all' or 'none'")
        return self

    def changes(self) -> ChatChanges:
        """The fields sent (and only those) as the service's changes."""
        sent = self.model_fields_set
        return ChatChanges(
            title=self.title if "title" in sent else UNSET,
            notification_preference=(
                self.notification_preference if self.notification_preference is not None else UNSET
            ),
            current_company_id=self.current_company_id if "current_company_id" in sent else UNSET,
        )


class ChatToolsInput(BaseModel):
    """Body of ``PUT /ai_chats/{id}/tools``."""

    model_config = ConfigDict(extra="forbid")

    tools: list[ToolName] | None = Field(max_length=100, description=TOOLS_DESCRIPTION)

    def changes(self) -> ChatChanges:
        return ChatChanges(tools=_tool_names(self.tools))


# ---------------------------------------------------------------------------------- schedules

# A schedule has exactly one kind: of `cron`, `interval_seconds` and `run_at`, one is sent and not null
# (null counts as left out). The validator checks it, which JSON Schema cannot see: the schema says it too.
_ONE_SCHEDULE_KIND: JsonDict = {
    "oneOf": [
        {"required": [kind], "properties": {kind: {"not": {"type": "null"}}}}
        for kind in ("cron", "interval_seconds", "run_at")
    ]
}


class _ScheduleBody(BaseModel):
    """The fields of a schedule's body, shared by saving it and previewing it."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_ONE_SCHEDULE_KIND)

    prompt: Prompt | None = None
    timezone: str = Field(description="IANA time zone, e.g. `Europe/Paris`.", examples=["Europe/Paris", "UTC"])
    cron: Annotated[str, StringConstraints(max_length=128)] | None = Field(None, description="5-field cron.")
    interval_seconds: int | None = Field(
        None,
        ge=1,
        le=MAX_INTERVAL_SECONDS,
        description="Seconds between runs, from `AICHATS_SCHEDULE_MIN_INTERVAL_SECONDS` to 31622400 (366 days).",
    )
    run_at: Annotated[str, StringConstraints(max_length=64)] | None = Field(
        None, description="One run at this ISO 8601 instant, in the future and at most 9999-12-31T23:59:59.999Z."
    )
    active: bool = True
    tools: list[ToolName] | None = Field(
        None, max_length=100, description="The tools its runs may use, as a chat's `tools`; `null`: the chat's."
    )
    allow_changes: bool = Field(
        False,
        description="Whether its runs may call tools that change things (nobody is there to approve them); "
        "refused with an error the model sees otherwise.",
    )

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        kinds = [k for k in ("cron", "interval_seconds", "run_at") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError("send exactly one of cron, interval_seconds or run_at")
        if self.prompt is not None and not self.prompt.strip():
            raise ValueError("prompt must not be blank")
        return self

    def spec(self) -> ScheduleSpec:
        return ScheduleSpec(
            prompt=self.prompt,
            timezone=self.timezone,
            cron=self.cron,
            interval_seconds=self.interval_seconds,
            run_at=self.run_at,
            active=self.active,
            tools=_tool_names(self.tools),
            allow_changes=self.allow_changes,
        )


class ScheduleInput(_ScheduleBody):
    """Body of ``PUT /ai_chats/{id}/schedule``: a prompt, a time zone and one of cron,
    interval or a single instant."""

    prompt: Prompt = Field(
        description="What to ask the agent each time; `{{date}}`, `{{time}}`, `{{weekday}}` are rendered "
        "in the schedule's time zone."
    )


class SchedulePreviewInput(_ScheduleBody):
    """Body of ``POST /schedule_preview``: a schedule as ``PUT /ai_chats/{id}/schedule``
    takes it, so a form can show its times before saving; the prompt may be left out."""

    prompt: Prompt | None = Field(None, description="Optional here; checked as on save when sent.")


# ------------------------------------------------------------------ notifications and webhooks


class ReadInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ids: list[str] | None = Field(None, max_length=notifications.MAX_IDS, description="Leave out to mark all read.")


class WebhookInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(max_length=2048, description="Where events are POSTed (http or https).")
    events: list[str] = Field(min_length=1, description=f"Any of: {', '.join(webhooks.EVENTS)}.")

    def new_webhook(self) -> NewWebhook:
        return NewWebhook(url=self.url, events=tuple(self.events))


# ------------------------------------------------------------------------------- tool servers

HeaderValue = Annotated[str, StringConstraints(max_length=tool_servers.MAX_HEADER_VALUE_LENGTH)]


class ToolServerInput(BaseModel):
    """Body of ``POST /tool_servers``: a user's MCP server, reached over Streamable HTTP."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(
        pattern=tool_servers.NAME_PATTERN,
        description="Unique among the user's servers; it prefixes its tools' names as the model sees them "
        "(`name__tool`).",
        examples=["revenue"],
    )
    url: str = Field(
        max_length=tool_servers.MAX_URL_LENGTH,
        description="The server's Streamable HTTP endpoint (http or https; no private address unless the operator "
        "allows them).",
    )
    headers: dict[str, HeaderValue] | None = Field(
        None,
        max_length=tool_servers.MAX_HEADERS,
        description="Sent with every request to the server (an `Authorization` header, say); stored encrypted and "
        "never returned. ASCII values, no line breaks.",
    )

    def new_server(self) -> tool_servers.NewServer:
        return tool_servers.NewServer(name=self.name, url=self.url, headers=dict(self.headers or {}))
