"""Business logic: what the API and the CLI ask for, in terms of storage.

Services take a :class:`~aichats.storage.database.Database` (or an open transaction)
and plain values; they know nothing of HTTP.
"""
