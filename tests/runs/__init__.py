"""Runs and workers in-process, on each database (the ``db`` fixture), with the deterministic test model."""
