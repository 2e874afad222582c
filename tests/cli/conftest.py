"""Fixtures of the command-line tests."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.databases import drop_postgres_database, postgres_database


@pytest.fixture
def empty_database_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """A database of ``backend``, never migrated and with no user: a first run."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'first-run.db'}"
        return
    name = f"aichats_first_{os.getpid()}_{secrets.token_hex(3)}"
    url = postgres_database(name)
    yield url
    drop_postgres_database(name)
