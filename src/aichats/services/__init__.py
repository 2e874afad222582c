"""Business logic: what the API and the CLI ask for, in terms of storage.

Services take a :class:`~aichats.storage.database.Database` (or an open transaction)
and plain typed values (keyword arguments, or small frozen dataclasses of their own such
as :class:`~aichats.services.chats.NewChat`); they know nothing of HTTP. The request
bodies are the API's (:mod:`aichats.api.models`), which checks them and hands over these
values; the domain's rules (enums, limits, what a cron or a time zone must be) stay here.
"""
