"""Business logic: what the API and the CLI ask for, in terms of storage.

Services take a :class:`~aichats.storage.database.Database` (or an open transaction)
and plain values or validated input models; they import nothing of the web framework. The
input models (pydantic) are the API's request bodies too, so their field names and limits
are the API's: they move to ``api`` once each operation is declared there (issue 11).
"""
