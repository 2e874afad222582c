"""The published whop-sdk clients, unchanged, against a real ``aichats serve``.

Each test prepares accounts with the real CLI, then runs one scenario of ``drive.py`` in
a subprocess whose PYTHONPATH holds one client: whop-sdk 0.0.41 (Stainless, ``v0``) or
2.6.0 (Fern, ``v2``); both import as ``whop_sdk``, so they cannot share a process. The
driver makes the calls and checks the answers; a failure shows its output here. Every
test runs for each client on each database (``live_server`` is parametrised by backend).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx2
import pytest

from tests.support.accounts import Account
from tests.support.servers import LiveServer

DRIVER = Path(__file__).with_name("drive.py")
CLIENTS_DIR = Path(__file__).parents[2] / ".venv" / "clients"
CLIENTS = ["v0", "v2"]

pytestmark = pytest.mark.e2e


@pytest.fixture(params=CLIENTS)
def client(request: pytest.FixtureRequest) -> str:
    directory = CLIENTS_DIR / request.param / "whop_sdk"
    if not directory.is_dir():
        pytest.fail(f"{directory} is missing: scripts/test installs the published clients")
    return request.param


def key_for(server: LiveServer, account: Account, scopes: str) -> Account:
    """Another API key of ``account``'s user, limited to ``scopes``."""
    key = server.cli("keys", "create", "--user", account.user_id, "--scopes", scopes).stdout.strip().splitlines()[-1]
    return Account(account.user_id, key)


def drive(client: str, scenario: str, server: LiveServer, **accounts: Account) -> None:
    """Run ``scenario`` with ``client`` against ``server``; fail with the driver's output."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("WHOP_")}
    env.update(
        PYTHONPATH=str(CLIENTS_DIR / client),
        AICHATS_E2E_BASE_URL=server.api,
        AICHATS_E2E_ACCOUNTS=json.dumps({name: vars(account) for name, account in accounts.items()}),
    )
    result = subprocess.run(
        [sys.executable, str(DRIVER), client, scenario], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, (
        f"{scenario} with whop-sdk {client} exited {result.returncode}\n"
        f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
    )


def upload(server: LiveServer, account: Account) -> str:
    """A file of ``account``'s, uploaded over HTTP (the clients have no files call)."""
    files = {"file": ("notes.txt", b"Revenue grew 4% week over week.", "text/plain")}
    response = httpx2.post(server.api + "/files", headers=account.headers, files=files)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_crud(client: str, live_server: LiveServer, account: Account) -> None:
    account.file_id = upload(live_server, account)
    drive(client, "crud", live_server, main=account)


def test_auto_pagination(client: str, live_server: LiveServer, account: Account) -> None:
    drive(client, "pagination", live_server, main=account)


def test_filters(client: str, live_server: LiveServer, account: Account) -> None:
    drive(client, "filters", live_server, main=account)


def test_errors(client: str, live_server: LiveServer, account: Account) -> None:
    drive(
        client,
        "errors",
        live_server,
        main=account,
        reader=key_for(live_server, account, "ai_chat:read"),
        creator=key_for(live_server, account, "ai_chat:create"),
        other=live_server.account(),
    )


def test_idempotent_retries(client: str, live_server: LiveServer, account: Account) -> None:
    drive(client, "idempotency", live_server, main=account, other=live_server.account())
