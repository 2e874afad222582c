"""``GET /usage``: what the caller has used of their limits (the daily token budget, the
schedules' cap) and what the limits are. The rate limit itself is applied to every
operation by its endpoint (:mod:`aichats.api.rate_limit`); the budget, by those that
start a turn (``turn=True``)."""

from __future__ import annotations

from datetime import UTC, datetime

from starlette.responses import Response

from aichats.api import schemas
from aichats.api.operations import Call, operation
from aichats.api.responses import json_response
from aichats.clock import isoformat_ms, now_ms
from aichats.services import budgets, schedules
from aichats.services.usage import decimal_tokens


@operation(
    "GET",
    "/usage",
    "getUsage",
    summary="The caller's blended tokens of the UTC day against their daily token budget (when it resets), "
    "their active schedules against the cap, and the key's rate limit per operation.",
    scope="ai_chat:read",
    tag="Usage",
    response=schemas.UsageSummary,
    response_description="Usage and limits.",
)
async def usage(call: Call) -> Response:
    user_id, settings, now = call.principal.user_id, call.settings, now_ms()
    standing = (await budgets.standings(call.db, [user_id], now=now, default=settings.token_budget_per_day))[user_id]
    remaining = standing.remaining_micros
    return json_response(
        {
            "date": datetime.fromtimestamp(now / 1000, UTC).date().isoformat(),
            "blended_tokens": decimal_tokens(standing.used_micros),
            "token_budget": None if standing.budget is None else str(standing.budget),
            "remaining_tokens": None if remaining is None else decimal_tokens(remaining),
            "resets_at": isoformat_ms(budgets.resets_at(now)),
            "active_schedules": await schedules.active_count(call.db, user_id),
            "max_active_schedules": settings.max_schedules_per_user or None,
            "rate_limit_per_minute": settings.rate_limit_per_minute or None,
        }
    )
