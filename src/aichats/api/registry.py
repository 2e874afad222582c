"""Every operation of the API, in the router's order: the busiest first (the router tries
routes in order, and a path's route comes where its first operation does)."""

from __future__ import annotations

from aichats.api import ai_chats, messages, notify, schedules, tool_servers, usage
from aichats.api.operations import Operation

OPERATIONS: tuple[Operation, ...] = (
    ai_chats.retrieve,
    ai_chats.list_,
    ai_chats.create,
    ai_chats.update,
    ai_chats.delete,
    ai_chats.get_tools,
    ai_chats.put_tools,
    messages.list_,
    messages.create,
    messages.stream,
    messages.retry,
    messages.cancel,
    messages.approve,
    messages.deny,
    messages.upload,
    schedules.get,
    schedules.put,
    schedules.delete,
    schedules.run_now,
    schedules.preview,
    schedules.list_runs,
    notify.read_chat,
    notify.list_notifications,
    notify.read_notifications,
    notify.stream,
    notify.badges,
    notify.list_webhooks,
    notify.create_webhook,
    notify.get_webhook,
    notify.delete_webhook,
    notify.list_deliveries,
    tool_servers.list_,
    tool_servers.create,
    tool_servers.get,
    tool_servers.delete,
    tool_servers.refresh,
    tool_servers.list_tools,
    usage.usage,
)
