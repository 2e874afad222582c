"""``GET /readyz`` (issue 13, item 5): 200 while the database answers and every background
service runs; 503 in the error envelope, saying what failed, otherwise. ``/healthz``
stays the cheap liveness check."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from aichats.runs.supervisor import Service, Supervisor
from tests.support.api import assert_error
from tests.support.databases import fresh_database, postgres_admin
from tests.support.servers import AppServer
from tests.support.waiting import wait_for


@pytest.fixture
def client(app_server: AppServer) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=app_server.root, transport=app_server.transport(), timeout=10) as client:
        yield client


def test_ready_while_the_database_answers_and_the_services_run(client: httpx2.Client) -> None:
    answer = client.get("/readyz")
    assert answer.status_code == 200, answer.text
    # AICHATS_WORKERS=0: no workers, scheduler nor webhook sender to check, which is fine.
    assert answer.json() == {"status": "ready", "services": ["housekeeping"]}


def test_not_ready_once_the_services_are_stopped(app_server: AppServer, client: httpx2.Client) -> None:
    app_server.portal.call(app_server.app.state.supervisor.stop)
    assert_error(client.get("/readyz"), 503, "not_ready", "background services not running: housekeeping")
    assert client.get("/healthz").status_code == 200  # alive all the same: liveness is not readiness


def test_not_ready_while_the_database_is_gone(tmp_path: Path) -> None:
    """PostgreSQL refuses the server's connections (and ends those it had); the database is
    back: ready again, without a restart. (PostgreSQL only: an SQLite database is a file of
    the process's own, it cannot go away like a server.)"""
    with fresh_database("postgresql", tmp_path) as url, AppServer(url, tmp_path / "files") as app_server:
        with httpx2.Client(base_url=app_server.root, transport=app_server.transport(), timeout=10) as client:
            _database_goes_and_comes_back(url, client)


def _database_goes_and_comes_back(url: str, client: httpx2.Client) -> None:
    assert client.get("/readyz").status_code == 200
    name = url.rsplit("/", 1)[1]
    postgres_admin(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
    try:
        postgres_admin(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
        assert_error(client.get("/readyz"), 503, "not_ready", "the database did not answer")
        assert client.get("/metrics").status_code == 200  # still scraped, saying the database is down
        assert "aichats_database_up 0.0" in client.get("/metrics").text
    finally:
        postgres_admin(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
    wait_for(lambda: client.get("/readyz").status_code == 200, 10, "ready again")


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_crashed_service_is_not_running_until_it_is_started_again() -> None:
    crashed = asyncio.Event()
    steady = asyncio.Event()

    async def flaky() -> None:
        if not crashed.is_set():
            crashed.set()
            raise RuntimeError("crash")
        steady.set()
        await asyncio.Event().wait()

    async def fine() -> None:
        await asyncio.Event().wait()

    supervisor = Supervisor([Service("flaky", flaky), Service("fine", fine)], restart_seconds=0.3)
    assert supervisor.not_running() == ["flaky", "fine"]  # not started
    supervisor.start()
    await asyncio.wait_for(crashed.wait(), 2)
    await asyncio.sleep(0.05)
    assert supervisor.not_running() == ["flaky"]  # waiting to be started again
    await asyncio.wait_for(steady.wait(), 2)
    assert supervisor.not_running() == []
    await supervisor.stop()
    assert supervisor.not_running() == ["flaky", "fine"]
