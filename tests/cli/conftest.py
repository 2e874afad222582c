"""Fixtures of the command-line tests."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import _postgres_admin, _postgres_database


@pytest.fixture
def empty_database_url(database_url: str, tmp_path: Path) -> Iterator[str]:
    """A database of the same kind as ``database_url``, never migrated and with no user: a first run."""
    if database_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'first-run.db'}"
        return
    name = f"aichats_first_{os.getpid()}_{secrets.token_hex(3)}"
    url = _postgres_database(name)
    yield url
    _postgres_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
