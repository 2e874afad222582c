"""Services run in-process against each database (the ``db`` fixture)."""
