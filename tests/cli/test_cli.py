"""The operator's commands, run as real processes."""

from __future__ import annotations

import httpx2

from tests.conftest import LiveServer


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def test_users_and_keys_lifecycle(live_server: LiveServer) -> None:
    user_id = last_line(live_server.cli("users", "create", "--id", "user_cliTest" + live_server.root[-5:]).stdout)
    assert user_id.startswith("user_cliTest")
    key = last_line(live_server.cli("keys", "create", "--user", user_id, "--scopes", "ai_chat:read").stdout)
    assert key.startswith("ak_")
    listing = live_server.cli("keys", "list", "--user", user_id).stdout
    assert key not in listing  # only a prefix and the hash are stored
    key_id, prefix, scopes, _created, state = listing.strip().split("\t")
    assert key.startswith(prefix.removesuffix("...")) and scopes == "ai_chat:read" and state == "active"

    headers = {"Authorization": f"Bearer {key}"}
    assert httpx2.get(live_server.api + "/ai_chats", headers=headers).status_code == 200
    assert live_server.cli("keys", "revoke", key_id).stdout.strip() == f"revoked {key_id}"
    assert httpx2.get(live_server.api + "/ai_chats", headers=headers).status_code == 401
    assert "revoked" in live_server.cli("keys", "list", "--user", user_id).stdout
    assert "already revoked" in live_server.cli("keys", "revoke", key_id).stdout


def test_random_user_ids(live_server: LiveServer) -> None:
    first = last_line(live_server.cli("users", "create").stdout)
    second = last_line(live_server.cli("users", "create").stdout)
    assert first.startswith("user_") and first != second


def test_bad_input_is_refused(live_server: LiveServer) -> None:
    duplicate = live_server.cli("users", "create", "--id", "user_dup" + live_server.root[-5:]).stdout
    again = live_server.cli("users", "create", "--id", last_line(duplicate), check=False)
    assert again.returncode != 0 and "already exists" in again.stderr
    assert "user id" in live_server.cli("users", "create", "--id", "bob", check=False).stderr
    unknown = live_server.cli("keys", "create", "--user", "user_nobody", check=False)
    assert unknown.returncode != 0 and "no user" in unknown.stderr
    scopes = live_server.cli("keys", "create", "--user", last_line(duplicate), "--scopes", "admin", check=False)
    assert scopes.returncode != 0 and "unknown scope" in scopes.stderr
    missing = live_server.cli("keys", "revoke", "key_missing", check=False)
    assert missing.returncode != 0 and "no API key" in missing.stderr
