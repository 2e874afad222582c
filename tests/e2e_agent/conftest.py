"""The agent's end-to-end tests: every server (and worker) they start gets a database of
its own, from ``new_database`` (``tests/conftest.py``), on each backend; workers of one
process would otherwise claim the runs another test queued for a different model."""
