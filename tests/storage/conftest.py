"""Fixtures of the storage tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aichats.storage import database, migrate
from aichats.storage.database import SQLiteDatabase


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[SQLiteDatabase]:
    """A migrated SQLite database of its own, connected as a server connects to it."""
    url = f"sqlite:///{tmp_path / 'storage.db'}"
    migrate.upgrade(url)
    connected = await database.connect(url)
    assert isinstance(connected, SQLiteDatabase)
    yield connected
    await connected.close()
