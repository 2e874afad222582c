"""The database schema: one definition for SQLite and PostgreSQL.

Design notes, for tables that grow to tens of millions of rows:

* Every table has a compact integer primary key (``pk``) that also gives a stable
  insertion order, and a public text id (``aich_...``) with its own unique index.
  Keyset pagination walks ``(user_id, pk)`` indexes, never OFFSET.
* Instants are integer milliseconds since the Unix epoch (UTC): the API speaks
  milliseconds, both databases index and compare them the same way, and no driver
  converts time zones behind our back.
* Token usage is an integer count of millionths of a token, so sums are exact on
  both databases (SQLite has no exact decimal type).
* Soft-deleted chats keep their rows; partial indexes cover only live chats so that
  deleted rows cost list queries nothing.
"""

from __future__ import annotations

import sqlalchemy as sa

# SQLite only makes INTEGER PRIMARY KEY an alias of its rowid (and so autoincrementing);
# PostgreSQL gets a 64-bit identity.
PrimaryKey = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
    }
)

LIVE_CHAT = sa.text("deleted_at IS NULL")
# A live chat with an active schedule: the partial index of those (0009). The queries that
# want it filter with ACTIVE_CRON beside their ``deleted_at IS NULL``, word for word: SQLite
# uses a partial index only for a query with its condition's own terms (``has_active_cron = 1``
# would not do).
ACTIVE_CRON = sa.text("has_active_cron")
ACTIVE_CRON_CHAT = sa.text(f"{LIVE_CHAT.text} AND {ACTIVE_CRON.text}")
ACTIVE_RUN = sa.text("status IN ('queued', 'running', 'waiting')")

users = sa.Table(
    "users",
    metadata,
    sa.Column("pk", PrimaryKey, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("pk", PrimaryKey, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(64), nullable=False, unique=True),
    sa.Column("user_id", sa.String(64), sa.ForeignKey("users.id"), nullable=False, index=True),
    # SHA-256 of the whole key: keys are 192-bit random strings, so a fast hash is safe.
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("prefix", sa.String(16), nullable=False),
    sa.Column("scopes", sa.String(255), nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("revoked_at", sa.BigInteger, nullable=True),
)

# Carried by the lists' indexes by pk (0010): with them, a page of (pk, row_version) reads
# the index alone. deleted_at is NULL in every entry (the indexes are partial), but SQLite
# reads the table for any column that its query names and the index lacks.
_VERSION_COLUMNS = ("row_version", "deleted_at")

ai_chats = sa.Table(
    "ai_chats",
    metadata,
    sa.Column("pk", PrimaryKey, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(64), nullable=False, unique=True),
    sa.Column("user_id", sa.String(64), sa.ForeignKey("users.id"), nullable=False),
    sa.Column("title", sa.Text, nullable=True),
    sa.Column("notification_preference", sa.String(16), nullable=False),
    sa.Column("agent_identifier", sa.String(32), nullable=False),
    sa.Column("current_company_id", sa.String(64), nullable=True),
    sa.Column("message_count", sa.Integer, nullable=False),
    sa.Column("blended_token_usage_micros", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    sa.Column("last_message_at", sa.BigInteger, nullable=True),
    # max(created_at, last_message_at): the sort key of the "recent activity" order.
    sa.Column("activity_at", sa.BigInteger, nullable=False),
    # Maintained by the scheduling service: true while the chat has an active schedule.
    sa.Column("has_active_cron", sa.Boolean, nullable=False, server_default=sa.false()),
    # Unread replies (the chat's badge); reading the chat clears it.
    sa.Column("unread_count", sa.Integer, nullable=False, server_default="0"),
    # True once the user chose the title (on create or update): generated titles never replace it.
    sa.Column("title_locked", sa.Boolean, nullable=False, server_default=sa.false()),
    # JSON list of the tools and tool servers the chat's agent may use; NULL: all the user's (0007).
    sa.Column("tools", sa.Text, nullable=True),
    sa.Column("deleted_at", sa.BigInteger, nullable=True),
    # One more at every change of what the chat's JSON shows, made by a trigger whoever
    # changes it (migration 0010): what the API's memo of chats' answers keys on
    # (aichats.api.ai_chats), so that the first page of a list reads it alone, from its index.
    sa.Column("row_version", sa.BigInteger, nullable=False, server_default="0"),
    sa.Index(
        "ix_ai_chats_user_pk_live",
        "user_id",
        "pk",
        *_VERSION_COLUMNS,
        sqlite_where=LIVE_CHAT,
        postgresql_where=LIVE_CHAT,
    ),
    sa.Index(
        "ix_ai_chats_user_activity_live",
        "user_id",
        "activity_at",
        "pk",
        sqlite_where=LIVE_CHAT,
        postgresql_where=LIVE_CHAT,
    ),
    sa.Index(
        "ix_ai_chats_user_agent_pk_live",
        "user_id",
        "agent_identifier",
        "pk",
        sqlite_where=LIVE_CHAT,
        postgresql_where=LIVE_CHAT,
    ),
    sa.Index(
        "ix_ai_chats_user_active_cron_pk",
        "user_id",
        "pk",
        *_VERSION_COLUMNS,
        sqlite_where=ACTIVE_CRON_CHAT,
        postgresql_where=ACTIVE_CRON_CHAT,
    ),
)

messages = sa.Table(
    "messages",
    metadata,
    sa.Column("pk", PrimaryKey, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(64), nullable=False, unique=True),
    sa.Column("chat_pk", sa.BigInteger, sa.ForeignKey("ai_chats.pk"), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("content", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("source", sa.String(16), nullable=False),
    sa.Column("suggestion_type", sa.String(64), nullable=True),
    # JSON list of {"id": "file_..."}: small, always read with the message.
    sa.Column("attachments", sa.Text, nullable=False),
    sa.Column("model", sa.String(128), nullable=True),
    sa.Column("input_tokens", sa.Integer, nullable=False, server_default="0"),
    sa.Column("output_tokens", sa.Integer, nullable=False, server_default="0"),
    sa.Column("blended_tokens_micros", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("completed_at", sa.BigInteger, nullable=True),
    sa.Index("ix_messages_chat_pk_pk", "chat_pk", "pk"),
)

# An agent turn is queued work, done outside the request by a worker (the agent issue).
runs = sa.Table(
    "runs",
    metadata,
    sa.Column("pk", PrimaryKey, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(64), nullable=False, unique=True),
    sa.Column("chat_pk", sa.BigInteger, sa.ForeignKey("ai_chats.pk"), nullable=False),
    sa.Column("trigger", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("user_message_pk", sa.BigInteger, sa.ForeignKey("messages.pk"), nullable=True),
    sa.Column("scheduled_for", sa.BigInteger, nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("started_at", sa.BigInteger, nullable=True),
    sa.Column("finished_at", sa.BigInteger, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    # Claiming: a worker holds a run while its lease is in the future, renewing it
    # (heartbeat); a run whose lease lapsed belonged to a dead worker and is claimed again.
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("worker_id", sa.String(64), nullable=True),
    sa.Column("lease_expires_at", sa.BigInteger, nullable=True),
    sa.Column("assistant_message_pk", sa.BigInteger, sa.ForeignKey("messages.pk"), nullable=True),
    sa.Column("model", sa.String(128), nullable=True),
    sa.Column("input_tokens", sa.Integer, nullable=False, server_default="0"),
    sa.Column("output_tokens", sa.Integer, nullable=False, server_default="0"),
    sa.Column("blended_tokens_micros", sa.BigInteger, nullable=False, server_default="0"),
    # Times the run went back to the queue after waiting for a tool's approval: not failures,
    # so they do not count against AICHATS_MAX_RUN_ATTEMPTS (0007).
    sa.Column("resumes", sa.Integer, nullable=False, server_default="0"),
    sa.Index("ix_runs_chat_pk_pk", "chat_pk", "pk"),
    # Exactly once per scheduled instant: a second scheduler firing the same one fails here.
    sa.Index(
        "uq_runs_chat_pk_scheduled_for",
        "chat_pk",
        "scheduled_for",
        unique=True,
        sqlite_where=sa.text("trigger = 'schedule'"),
        postgresql_where=sa.text("trigger = 'schedule'"),
    ),
    # Active runs: queued, running, or waiting for the user to approve a tool call (0007);
    # a waiting run holds its chat's later turns back, as a running one does.
    sa.Index("ix_runs_active_pk", "pk", sqlite_where=ACTIVE_RUN, postgresql_where=ACTIVE_RUN),
    # The claim's probe for an older active run of the same chat: one index entry, however
    # long the chat's history of finished runs.
    sa.Index("ix_runs_active_chat_pk_pk", "chat_pk", "pk", sqlite_where=ACTIVE_RUN, postgresql_where=ACTIVE_RUN),
)

# A turn's calls of its model, each stored once it ends (0007): the text it wrote and the
# tokens it used. A turn resumed after a crash, or after a tool's approval, replays these
# (with their tool calls' results) instead of calling the model or the tools again, and the
# reply's usage is their sum.
reply_steps = sa.Table(
    "reply_steps",
    metadata,
    sa.Column("pk", PrimaryKey, primary_key=True, autoincrement=True),
    sa.Column("run_pk", sa.BigInteger, sa.ForeignKey("runs.pk"), nullable=False),
    sa.Column("message_pk", sa.BigInteger, sa.ForeignKey("messages.pk"), nullable=False),
    sa.Column("step", sa.Integer, nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("input_tokens", sa.Integer, nullable=False),
    sa.Column("output_tokens", sa.Integer, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.UniqueConstraint("run_pk", "step"),
    sa.Index("ix_reply_steps_message_pk", "message_pk"),
)

# Every tool call of a turn (0007): what was called, with what, and what came back.
tool_calls = sa.Table(
    "tool_calls",
    metadata,
    sa.Column("pk", PrimaryKey, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(64), nullable=False, unique=True),
    sa.Column("chat_pk", sa.BigInteger, sa.ForeignKey("ai_chats.pk"), nullable=False),
    sa.Column("message_pk", sa.BigInteger, sa.ForeignKey("messages.pk"), nullable=False),
    sa.Column("run_pk", sa.BigInteger, sa.ForeignKey("runs.pk"), nullable=False),
    sa.Column("step", sa.Integer, nullable=False),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("call_id", sa.String(255), nullable=False),  # the provider's id of the call
    sa.Column("name", sa.String(64), nullable=False),  # as the model was offered it
    sa.Column("server_id", sa.String(64), nullable=True),  # a user's server (tsrv_...); NULL: built in, operator
    sa.Column("server", sa.String(64), nullable=True),  # the server's name; NULL: built in
    sa.Column("tool", sa.String(255), nullable=False),  # the tool's own name on its server
    sa.Column("arguments", sa.Text, nullable=False),
    # requested, awaiting_approval, approved, denied, running, completed, failed
    sa.Column("status", sa.String(24), nullable=False),
    sa.Column("needs_approval", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("result", sa.Text, nullable=True),
    sa.Column("is_error", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("started_at", sa.BigInteger, nullable=True),
    sa.Column("finished_at", sa.BigInteger, nullable=True),
    sa.Column("duration_ms", sa.Integer, nullable=True),
    sa.Column("decided_at", sa.BigInteger, nullable=True),
    sa.UniqueConstraint("run_pk", "step", "position"),
    sa.Index("ix_tool_calls_message_pk_pk", "message_pk", "pk"),
)

# A user's MCP tool servers (0007), reached over Streamable HTTP. ``headers`` (an
# Authorization header, say) are encrypted at rest; ``tools`` is the server's tool list as
# last fetched (JSON), so a turn knows what to offer without connecting.
tool_servers = sa.Table(
    "tool_servers",
    metadata,
    sa.Column("pk", PrimaryKey, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(64), nullable=False, unique=True),
    sa.Column("user_id", sa.String(64), sa.ForeignKey("users.id"), nullable=False),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("headers", sa.Text, nullable=True),  # encrypted JSON object, or NULL for none
    sa.Column("tools", sa.Text, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    sa.Column("refreshed_at", sa.BigInteger, nullable=False),
    sa.UniqueConstraint("user_id", "name"),
    sa.Index("ix_tool_servers_user_id_pk", "user_id", "pk"),
)

# Everything that happens in a chat, in order: what the events stream replays from
# ``Last-Event-ID`` (the pk). Deltas are coalesced (a row per ~50 ms of output).
chat_events = sa.Table(
    "chat_events",
    metadata,
    sa.Column("pk", PrimaryKey, primary_key=True, autoincrement=True),
    sa.Column("chat_pk", sa.BigInteger, sa.ForeignKey("ai_chats.pk"), nullable=False),
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("data", sa.Text, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Index("ix_chat_events_chat_pk_pk", "chat_pk", "pk"),
)

files = sa.Table(
    "files",
    metadata,
    sa.Column("pk", PrimaryKey, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(64), nullable=False, unique=True),
    sa.Column("user_id", sa.String(64), sa.ForeignKey("users.id"), nullable=False, index=True),
    sa.Column("filename", sa.String(255), nullable=False),
    sa.Column("content_type", sa.String(127), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
)

idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column("pk", PrimaryKey, primary_key=True, autoincrement=True),
    sa.Column("api_key_id", sa.String(64), nullable=False),
    sa.Column("key", sa.String(255), nullable=False),
    sa.Column("request_hash", sa.String(64), nullable=False),
    sa.Column("status_code", sa.Integer, nullable=False),
    sa.Column("response_body", sa.Text, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.UniqueConstraint("api_key_id", "key"),
    sa.Index("ix_idempotency_keys_created_at", "created_at"),
)

# Rate limits (0008): per API key and operation, the requests granted to server processes in
# the current minute. One row each, reset when a new minute's first block is reserved, so
# nothing accumulates (services/rate_limits.py).
rate_limits = sa.Table(
    "rate_limits",
    metadata,
    sa.Column("pk", PrimaryKey, primary_key=True, autoincrement=True),
    sa.Column("key_id", sa.String(64), nullable=False),
    sa.Column("operation", sa.String(64), nullable=False),
    sa.Column("minute", sa.BigInteger, nullable=False),  # minutes since the Unix epoch (UTC)
    sa.Column("used", sa.Integer, nullable=False),  # granted so far in ``minute``, by every process
    sa.Column("granted", sa.Integer, nullable=False),  # the last reservation's block
    sa.UniqueConstraint("key_id", "operation"),
)

# A user's blended tokens per UTC day (0008), added in the transaction that adds a reply's
# usage to its chat: what the daily token budget is checked against.
token_usage = sa.Table(
    "token_usage",
    metadata,
    sa.Column("pk", PrimaryKey, primary_key=True, autoincrement=True),
    sa.Column("user_id", sa.String(64), sa.ForeignKey("users.id"), nullable=False),
    sa.Column("day", sa.Integer, nullable=False),  # days since the Unix epoch (UTC)
    sa.Column("blended_tokens_micros", sa.BigInteger, nullable=False),
    sa.UniqueConstraint("user_id", "day"),
)

# A user's own daily token budget (0008), set by the operator (``aichats users budget``); a
# user without a row has AICHATS_TOKEN_BUDGET_PER_DAY. ``tokens_per_day`` NULL: no limit.
token_budgets = sa.Table(
    "token_budgets",
    metadata,
    sa.Column("pk", PrimaryKey, primary_key=True, autoincrement=True),
    sa.Column("user_id", sa.String(64), sa.ForeignKey("users.id"), nullable=False, unique=True),
    sa.Column("tokens_per_day", sa.BigInteger, nullable=True),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
)

# A chat's scheduled automation: at most one per chat. ``next_run_at`` is the instant the
# scheduler fires next; advancing it is a compare-and-set, so each instant fires once.
schedules = sa.Table(
    "schedules",
    metadata,
    sa.Column("pk", PrimaryKey, primary_key=True, autoincrement=True),
    sa.Column("chat_pk", sa.BigInteger, sa.ForeignKey("ai_chats.pk"), nullable=False, unique=True),
    sa.Column("prompt", sa.Text, nullable=False),
    sa.Column("timezone", sa.String(64), nullable=False),
    sa.Column("cron", sa.String(128), nullable=True),
    sa.Column("interval_seconds", sa.Integer, nullable=True),
    sa.Column("run_at", sa.BigInteger, nullable=True),
    sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("next_run_at", sa.BigInteger, nullable=True),
    sa.Column("last_run_at", sa.BigInteger, nullable=True),
    sa.Column("consecutive_failures", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    sa.Column("last_error", sa.Text, nullable=True),  # why the scheduler quarantined it (0005)
    # JSON list of the tools its turns may use (NULL: the chat's); tools that change things
    # run in its turns only when ``allow_changes`` (0007).
    sa.Column("tools", sa.Text, nullable=True),
    sa.Column("allow_changes", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Index(
        "ix_schedules_due",
        "next_run_at",
        sqlite_where=sa.text("active"),
        postgresql_where=sa.text("active"),
    ),
)

notifications = sa.Table(
    "notifications",
    metadata,
    sa.Column("pk", PrimaryKey, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(64), nullable=False, unique=True),
    sa.Column("user_id", sa.String(64), sa.ForeignKey("users.id"), nullable=False),
    sa.Column("chat_pk", sa.BigInteger, sa.ForeignKey("ai_chats.pk"), nullable=False),
    sa.Column("kind", sa.String(48), nullable=False),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("message_id", sa.String(64), nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("read_at", sa.BigInteger, nullable=True),
    sa.Index("ix_notifications_user_id_pk", "user_id", "pk"),
    sa.Index(
        "ix_notifications_unread",
        "user_id",
        "chat_pk",
        sqlite_where=sa.text("read_at IS NULL"),
        postgresql_where=sa.text("read_at IS NULL"),
    ),
)

webhooks = sa.Table(
    "webhooks",
    metadata,
    sa.Column("pk", PrimaryKey, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(64), nullable=False, unique=True),
    sa.Column("user_id", sa.String(64), sa.ForeignKey("users.id"), nullable=False, index=True),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("events", sa.Text, nullable=False),
    sa.Column("secret", sa.String(128), nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("deleted_at", sa.BigInteger, nullable=True),
)

# The outbox: one row per (webhook, event), written in the event's own transaction, so a
# crash can lose neither; senders claim due rows and retry them on a schedule.
webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("pk", PrimaryKey, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(64), nullable=False, unique=True),
    sa.Column("webhook_pk", sa.BigInteger, sa.ForeignKey("webhooks.pk"), nullable=False),
    sa.Column("event_type", sa.String(64), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", sa.BigInteger, nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("delivered_at", sa.BigInteger, nullable=True),
    sa.Index("ix_webhook_deliveries_webhook_pk_pk", "webhook_pk", "pk"),
    sa.Index(
        "ix_webhook_deliveries_due",
        "next_attempt_at",
        sqlite_where=sa.text("status = 'pending'"),
        postgresql_where=sa.text("status = 'pending'"),
    ),
)

webhook_attempts = sa.Table(
    "webhook_attempts",
    metadata,
    sa.Column("pk", PrimaryKey, primary_key=True, autoincrement=True),
    sa.Column("delivery_pk", sa.BigInteger, sa.ForeignKey("webhook_deliveries.pk"), nullable=False),
    sa.Column("attempted_at", sa.BigInteger, nullable=False),
    sa.Column("status_code", sa.Integer, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("duration_ms", sa.Integer, nullable=False),
    sa.Index("ix_webhook_attempts_delivery_pk", "delivery_pk"),
)
