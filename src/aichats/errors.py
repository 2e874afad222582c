"""Errors that services raise and the API turns into its error envelope.

Each carries the HTTP status and the envelope's ``type``; the message is written for
the person reading the client's exception, so it says what was wrong and what to do.
"""

from __future__ import annotations


class ServiceError(Exception):
    status = 500
    type = "internal_error"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers  # sent with the answer (a 429's Retry-After)


class BadRequest(ServiceError):
    status = 400
    type = "bad_request"


class Unauthorized(ServiceError):
    status = 401
    type = "unauthorized"


class Forbidden(ServiceError):
    status = 403
    type = "forbidden"


class NotFound(ServiceError):
    status = 404
    type = "not_found"


class Conflict(ServiceError):
    status = 409
    type = "conflict"


class ScheduleLimitExceeded(Conflict):
    """The user has as many schedules as ``AICHATS_MAX_SCHEDULES_PER_USER`` allows."""

    type = "schedule_limit_exceeded"


class PayloadTooLarge(ServiceError):
    status = 413
    type = "payload_too_large"


class Invalid(ServiceError):
    status = 422
    type = "invalid_request"


class RateLimited(ServiceError):
    """Too many requests: retry after ``Retry-After`` seconds (set in ``headers``)."""

    status = 429
    type = "rate_limit_exceeded"


class TokenBudgetExceeded(RateLimited):
    """The user's blended tokens of the UTC day reached their budget: no new turn until it resets."""

    type = "token_budget_exceeded"
