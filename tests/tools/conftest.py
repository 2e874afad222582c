"""The tools' tests run in an asyncio loop, against real MCP servers (``tests/support/mcp_server.py``)."""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator

import pytest

from tests.support.mcp_server import McpProcess, serving_mcp


@pytest.fixture(autouse=True)
def nothing_escapes_into_the_loop(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """No task of the test ends with an exception nobody read, nor reaches the loop's handler
    (which asyncio logs as an error, at the latest when the task is collected)."""
    yield
    gc.collect()
    records = caplog.get_records("call") + caplog.records
    assert [r.getMessage() for r in records if r.name == "asyncio" and r.levelno >= logging.ERROR] == []


@pytest.fixture(scope="package")
def mcp_server() -> Iterator[McpProcess]:
    """The test MCP server over Streamable HTTP, shared by the package's tests: its tools
    listed three per page, with two tools a client must skip."""
    with serving_mcp("--page-size", "3", "--odd-tools") as server:
        yield server
