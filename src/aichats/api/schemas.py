"""Response shapes, for the OpenAPI document and for tests that hold the API to it.

Services build plain dicts (``chat_json``, ``message_json``) for speed; tests validate real
responses against these models, with unknown fields forbidden.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from aichats.services.chats import AgentIdentifier, NotificationPreference

DATETIME = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$"
DECIMAL = r"^\d+(\.\d+)?$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UserRef(Strict):
    id: str = Field(pattern=r"^user_[A-Za-z0-9]+$", examples=["user_xxxxxxxxxxxxx"])


class AiChat(Strict):
    """An AI-powered chat conversation belonging to a user, with optional scheduled automation."""

    id: str = Field(pattern=r"^aich_[A-Za-z0-9]+$", examples=["aich_xxxxxxxxxxxxx"])
    title: str | None = Field(description="A short descriptive title; null if none is set.")
    notification_preference: NotificationPreference = Field(
        description="`all` delivers AI chat notifications and badges, `none` mutes them."
    )
    agent_identifier: AgentIdentifier
    message_count: int = Field(ge=0, description="Messages exchanged in this conversation.")
    blended_token_usage: str = Field(
        pattern=DECIMAL, examples=["123.45"], description="Exact decimal total of tokens consumed across all messages."
    )
    created_at: str = Field(pattern=DATETIME, examples=["2023-12-01T05:00:00.401Z"])
    updated_at: str = Field(pattern=DATETIME, examples=["2023-12-01T05:00:00.401Z"])
    last_message_at: str | None = Field(pattern=DATETIME, description="Newest message; null before any.")
    user: UserRef


class ChatTools(Strict):
    """The tools a chat's agent may use (docs/tools.md)."""

    ai_chat_id: str = Field(pattern=r"^aich_[A-Za-z0-9]+$")
    tools: list[str] | None = Field(
        description="Null: every tool of the user; else names of tool servers, tools (`server__tool`), "
        "`builtin` or built-in tools; `[]`: none."
    )


class PageInfo(Strict):
    start_cursor: str | None
    end_cursor: str | None
    has_next_page: bool
    has_previous_page: bool


class AiChatList(Strict):
    data: list[AiChat]
    page_info: PageInfo


class Usage(Strict):
    input_tokens: int = Field(ge=0)
    output_tokens: int = Field(ge=0)
    blended_tokens: str = Field(pattern=DECIMAL, description="Exact decimal: tokens weighted per model.")


class ToolServerRef(Strict):
    id: str | None = Field(description="The user's tool server (`tsrv_...`); null for an operator's server.")
    name: str


class ToolCall(Strict):
    """A tool the agent called while writing a reply (docs/tools.md)."""

    id: str = Field(pattern=r"^tcall_[A-Za-z0-9]+$")
    name: str = Field(description="The tool's name as the model saw it (`server__tool`, or a built-in's).")
    server: ToolServerRef | None = Field(description="Where the tool lives; null for a built-in tool.")
    arguments: str = Field(description="The arguments, as the model wrote them (JSON text).")
    status: Literal["requested", "awaiting_approval", "approved", "denied", "running", "completed", "failed"]
    result: str | None = Field(description="What the tool gave back (or the error), as text; null until it ends.")
    is_error: bool
    needs_approval: bool = Field(description="Whether it changes things and so waited for the user's approval.")
    created_at: str = Field(pattern=DATETIME)
    started_at: str | None = Field(pattern=DATETIME)
    finished_at: str | None = Field(pattern=DATETIME)
    duration_ms: int | None = Field(ge=0)


class Message(Strict):
    """One message of a chat: the user's, or the agent's reply (streamed, then completed or failed;
    ``waiting`` while a tool call awaits the user's approval, ``cancelled`` when stopped)."""

    id: str = Field(pattern=r"^aimsg_[A-Za-z0-9]+$")
    ai_chat_id: str = Field(pattern=r"^aich_[A-Za-z0-9]+$")
    role: Literal["user", "assistant"]
    content: str
    status: Literal["pending", "streaming", "waiting", "completed", "failed", "cancelled"]
    error: str | None = Field(description="Why the reply failed; null otherwise.")
    source: str = Field(
        description="`manual`, `suggestion`, `link` or `schedule` for user messages; `agent` for replies."
    )
    attachments: list[File] = Field(description="The files attached to a user message.")
    model: str | None = Field(description="`provider:model` that wrote the reply; null for user messages.")
    usage: Usage
    created_at: str = Field(pattern=DATETIME)
    completed_at: str | None = Field(pattern=DATETIME)
    tool_calls: list[ToolCall] = Field(description="The tools the reply called, in order (empty for most).")


class MessageList(Strict):
    data: list[Message]
    page_info: PageInfo


class File(Strict):
    id: str = Field(pattern=r"^file_[A-Za-z0-9]+$")
    filename: str
    content_type: str
    size: int = Field(ge=0)


class Schedule(Strict):
    """A chat's scheduled automation."""

    ai_chat_id: str
    prompt: str
    timezone: str
    cron: str | None
    interval_seconds: int | None
    run_at: str | None = Field(pattern=DATETIME)
    active: bool
    description: str = Field(examples=["At 09:00, only on Monday (America/New_York)"])
    next_run_at: str | None = Field(pattern=DATETIME)
    next_run_times: list[str] = Field(description="The next five fire times (empty while inactive).")
    last_run_at: str | None = Field(pattern=DATETIME)
    consecutive_failures: int
    last_error: str | None = Field(
        description="Why the scheduler turned this schedule off because its times could not be computed "
        "(null otherwise; saving it again clears it)."
    )
    tools: list[str] | None = Field(description="The tools its runs may use; null: the chat's.")
    allow_changes: bool = Field(description="Whether its runs may call tools that change things.")
    created_at: str = Field(pattern=DATETIME)
    updated_at: str = Field(pattern=DATETIME)


class SchedulePreview(Strict):
    """What a schedule would do if saved now (``POST /schedule_preview``)."""

    description: str = Field(examples=["At 09:00, only on Monday (America/New_York)"])
    next_run_times: list[str] = Field(description="The next five fire times (one for `run_at`; none if inactive).")
    timezone: str = Field(description="The IANA time zone, as it would be stored.")


class Run(Strict):
    """One agent turn: why it ran, when, and what it cost."""

    id: str = Field(pattern=r"^airun_[A-Za-z0-9]+$")
    trigger: Literal["message", "schedule", "manual", "retry"]
    status: Literal["queued", "running", "waiting", "completed", "failed", "cancelled"]
    scheduled_for: str | None = Field(pattern=DATETIME)
    created_at: str = Field(pattern=DATETIME)
    started_at: str | None = Field(pattern=DATETIME)
    finished_at: str | None = Field(pattern=DATETIME)
    error: str | None
    model: str | None
    usage: Usage


class RunList(Strict):
    data: list[Run]
    page_info: PageInfo


class Badges(Strict):
    """Data of the notifications stream's `badges` event."""

    unread_count: int = Field(ge=0, description="Unread notifications.")
    total: int = Field(ge=0, description="Sum of the chats' badges.")
    ai_chats: dict[str, int] = Field(description="Unread replies per chat id (chats with none are left out).")
    latest_notification_id: str | None = Field(description="The newest notification, read or not; null if none.")


class ErrorBody(Strict):
    type: str = Field(examples=["not_found"])
    message: str


class Error(Strict):
    error: ErrorBody


class Health(Strict):
    status: Literal["ok"]


class BadgeCounts(Strict):
    """Unread replies (``GET /badges``)."""

    total: int = Field(ge=0, description="Sum of the chats' badges.")
    ai_chats: dict[str, Annotated[int, Field(ge=0)]] = Field(
        description="Unread replies per chat id (chats with none are left out)."
    )


class Notification(Strict):
    id: str = Field(pattern=r"^ntf_[A-Za-z0-9]+$")
    kind: str = Field(examples=["ai_chat.reply"])
    ai_chat_id: str = Field(pattern=r"^aich_[A-Za-z0-9]+$")
    title: str
    body: str
    message_id: str | None
    created_at: str = Field(pattern=DATETIME)
    read_at: str | None = Field(pattern=DATETIME)


class NotificationList(Strict):
    data: list[Notification]
    page_info: PageInfo
    unread_count: int = Field(ge=0)


class MarkedRead(Strict):
    """How many notifications were marked read, and how many are still unread."""

    marked_read: int = Field(ge=0)
    unread_count: int = Field(ge=0)


class Webhook(Strict):
    id: str = Field(pattern=r"^wh_[A-Za-z0-9]+$")
    url: str
    events: list[str]
    created_at: str = Field(pattern=DATETIME)


class WebhookList(Strict):
    data: list[Webhook]


class WebhookCreated(Webhook):
    """A new webhook, with the secret that signs its deliveries (shown this once)."""

    secret: str


class DeliveryAttempt(Strict):
    attempted_at: str = Field(pattern=DATETIME)
    status_code: int | None
    error: str | None
    duration_ms: int = Field(ge=0)


class Delivery(Strict):
    id: str
    event_type: str
    status: Literal["pending", "delivered", "failed"]
    payload: dict[str, Any]
    created_at: str = Field(pattern=DATETIME)
    delivered_at: str | None = Field(pattern=DATETIME)
    next_attempt_at: str | None = Field(pattern=DATETIME)
    attempts: list[DeliveryAttempt]


class DeliveryList(Strict):
    data: list[Delivery]


# ------------------------------------------------------------------------------- tool servers


class ToolServerTool(Strict):
    """A tool as its server lists it."""

    name: str
    description: str
    read_only: bool = Field(description="MCP's `readOnlyHint`: it changes nothing.")
    destructive: bool = Field(description="MCP's `destructiveHint` (when not said: true unless read-only).")


class ToolServer(Strict):
    """A user's MCP tool server, reached over Streamable HTTP (docs/tools.md). Its headers are never returned."""

    id: str = Field(pattern=r"^tsrv_[A-Za-z0-9]+$", examples=["tsrv_0mxbofft83kTq9ZbW1xYv0pLm"])
    name: str = Field(description="Prefixes its tools' names as the model sees them: `name__tool`.")
    url: str
    has_headers: bool = Field(description="Whether headers are sent with each request (stored encrypted).")
    tools: list[ToolServerTool] = Field(description="Its tools, as last listed (on registering, or `refresh`).")
    created_at: str = Field(pattern=DATETIME)
    updated_at: str = Field(pattern=DATETIME)
    refreshed_at: str = Field(pattern=DATETIME, description="When its tools were last listed.")


class ToolServerList(Strict):
    data: list[ToolServer]
    page_info: PageInfo


class AvailableTool(Strict):
    """A tool the caller's agent can use, and where it comes from."""

    name: str = Field(description="As the model is offered it: `server__tool` (cut to 64), or a built-in's own name.")
    tool: str = Field(description="Its own name (on its server).")
    description: str
    server: ToolServerRef | None = Field(
        description="Its server: the user's (with its id) or the operator's (id null); null for a built-in tool."
    )
    kind: Literal["builtin", "operator", "user"]
    read_only: bool
    destructive: bool
    needs_approval: bool = Field(description="Whether a call in a chat waits for the user's approval.")


class AvailableToolList(Strict):
    data: list[AvailableTool]


class UsageSummary(Strict):
    """The caller's usage and limits (``GET /usage``): blended tokens of the UTC day against the
    daily token budget, active schedules against their cap, and the key's rate limit."""

    date: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$", description="The UTC day counted.")
    blended_tokens: str = Field(pattern=DECIMAL, examples=["1234.5"], description="Blended tokens used today.")
    token_budget: str | None = Field(
        pattern=DECIMAL, description="Blended tokens the user may use per UTC day; null: no limit."
    )
    remaining_tokens: str | None = Field(
        pattern=DECIMAL, description="What is left of the budget today (0 once it is used up); null: no limit."
    )
    resets_at: str = Field(pattern=DATETIME, description="The next UTC midnight, when the day's usage restarts at 0.")
    active_schedules: int = Field(ge=0, description="The user's active schedules.")
    max_active_schedules: int | None = Field(ge=1, description="The most the user may have; null: no cap.")
    rate_limit_per_minute: int | None = Field(
        ge=1, description="Requests the key may make to each operation per minute; null: no limit."
    )
