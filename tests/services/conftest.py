"""Services run in-process against each database (the ``database_url`` fixture)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from aichats import clock
from aichats.storage import database
from aichats.storage.database import Database


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    connection = await database.connect(database_url, pool_size=2)
    yield connection
    await connection.close()
    clock.set_clock(None)
