"""The operator's commands, run as real processes."""

from __future__ import annotations

from pathlib import Path

import httpx2
import pytest

from aichats.cli import _shown_database, _startup_summary
from aichats.config import Settings
from tests.support.servers import LiveServer, run_cli, start_server, stop_server


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


def test_users_create_with_key_signs_in(live_server: LiveServer) -> None:
    output = live_server.cli("users", "create", "--with-key").stdout
    lines = output.strip().splitlines()
    key = lines[-1]
    assert key.startswith("ak_") and lines[-2] == "store this key now; it cannot be shown again:"
    user_id = lines[0].removeprefix("created user ")
    assert user_id.startswith("user_")
    key_id = next(word for line in lines for word in line.split() if word.startswith("key_"))
    assert (
        f"created {key_id} for {user_id} with scopes ai_chat:read,ai_chat:create,ai_chat:update,ai_chat:delete" in lines
    )

    # The key works for the web app's sign-in and for the API, with every scope.
    session = httpx2.post(live_server.root + "/web/session", json={"api_key": key}, headers={"X-Aichats-Web": "1"})
    assert session.status_code == 200, session.text
    assert session.json()["user_id"] == user_id and session.json()["key_id"] == key_id
    headers = {"Authorization": f"Bearer {key}"}
    assert httpx2.get(live_server.api + "/ai_chats", headers=headers).status_code == 200
    created = httpx2.post(live_server.api + "/ai_chats", headers=headers, json={"message_text": "hello", "title": "t"})
    assert created.status_code in (200, 201), created.text
    listing = live_server.cli("keys", "list", "--user", user_id).stdout.strip().split("\t")
    assert listing[0] == key_id and listing[-1] == "active"


def test_users_create_with_key_and_scopes(live_server: LiveServer) -> None:
    output = live_server.cli(
        "users", "create", "--with-key", "--id", "user_scoped" + live_server.root[-5:], "--scopes", "ai_chat:read"
    ).stdout
    key = last_line(output)
    assert output.startswith("created user user_scoped") and "with scopes ai_chat:read\n" in output
    headers = {"Authorization": f"Bearer {key}"}
    assert httpx2.get(live_server.api + "/ai_chats", headers=headers).status_code == 200
    assert httpx2.post(live_server.api + "/ai_chats", headers=headers, json={"message_text": "hi"}).status_code == 403

    refused = live_server.cli("users", "create", "--with-key", "--scopes", "admin", check=False)
    assert refused.returncode != 0 and "unknown scope" in refused.stderr and not refused.stdout
    alone = live_server.cli("users", "create", "--scopes", "ai_chat:read", check=False)
    assert alone.returncode != 0 and "--with-key" in alone.stderr and not alone.stdout
    plain = live_server.cli("users", "create").stdout  # unchanged: the id alone
    assert plain.strip().startswith("user_") and len(plain.strip().splitlines()) == 1


def startup_lines(log: Path) -> list[str]:
    """What ``aichats serve`` printed before uvicorn's own lines."""
    lines = log.read_text().splitlines()
    assert any("Uvicorn running on" in line for line in lines)
    return lines[: next(i for i, line in enumerate(lines) if line.startswith("INFO:"))]


def test_serve_says_where_what_and_next_on_a_first_run(empty_database_url: str, tmp_path: Path) -> None:
    env = {"AICHATS_WORKERS": "0", "AICHATS_MODEL": "test:echo", "AICHATS_FILES_DIR": str(tmp_path / "files")}
    server = start_server(empty_database_url, tmp_path / "first.log", env)
    try:
        lines = startup_lines(tmp_path / "first.log")
        url = server.root + "/"
        assert lines[0] == f"aichats: serving the web app at {url} and the API at {url}api/v1"
        assert "  agent support: model test:echo" in lines and "  agent general: model test:echo" in lines
        assert not any("local engine" in line for line in lines)
        assert any(line.startswith("  agent workers: none here (AICHATS_WORKERS=0)") for line in lines)
        next_step = (
            f"  next: no user yet; run `aichats users create --with-key`, then sign in at {url} with the key it prints"
        )
        assert lines[-1] == next_step, lines

        # Following it: the printed key signs in to that server's web app.
        key = last_line(server.cli("users", "create", "--with-key").stdout)
        session = httpx2.post(url + "web/session", json={"api_key": key}, headers={"X-Aichats-Web": "1"})
        assert session.status_code == 200, session.text
    finally:
        stop_server(server)


def test_serve_with_users_and_the_local_model(database_url: str, tmp_path: Path) -> None:
    run_cli(database_url, "users", "create")
    env = {
        "AICHATS_WORKERS": "0",
        "AICHATS_MODEL": "test:echo",
        "AICHATS_MODEL_GENERAL": "local:smollm2-135m",
        "AICHATS_FILES_DIR": str(tmp_path / "files"),
    }
    server = start_server(database_url, tmp_path / "serve.log", env)
    try:
        lines = startup_lines(tmp_path / "serve.log")
    finally:
        stop_server(server)
    text = "\n".join(lines)
    assert f"at {server.root}/ and the API" in lines[0]
    assert "  agent support: model test:echo" in lines
    assert (
        "  agent general: model local:smollm2-135m (the built-in local demo model, in a local engine process)" in lines
    )
    assert "AICHATS_MODEL=openai:<model> with OPENAI_BASE_URL" in text and "anthropic:<model>" in text
    assert lines[-1] == f"  next: sign in at {server.root}/ with an API key (aichats keys create --user USER_ID)"
    assert ("database: " + _shown_database(database_url)) in text and len(lines) <= 8


def test_database_passwords_are_not_shown() -> None:
    shown = _shown_database("postgresql://aichats:s3cret@db.internal:5432/aichats")
    assert shown == "postgresql://aichats:***@db.internal:5432/aichats"
    assert _shown_database("postgresql://postgres@127.0.0.1:5432/x") == "postgresql://postgres@127.0.0.1:5432/x"
    assert _shown_database("sqlite:///aichats.db").startswith("sqlite:///aichats.db (/")


def test_serve_processes_option_and_the_old_workers_name(tmp_path: Path) -> None:
    """``--processes`` is the number of server processes; ``AICHATS_WORKERS`` the agent workers in each.
    The old ``--workers`` shared the second one's name: it is refused, with a pointer to both."""
    url = f"sqlite:///{tmp_path / 'unused.db'}"
    shown = run_cli(url, "serve", "--help").stdout
    assert "--processes INTEGER" in shown and "Server (uvicorn) processes" in shown
    assert "--workers" not in shown
    old = run_cli(url, "serve", "--workers", "2", check=False)
    assert old.returncode == 2, old
    assert "--workers is now --processes" in old.stderr
    assert "--processes 2" in old.stderr and "AICHATS_WORKERS" in old.stderr
    assert not (tmp_path / "unused.db").exists()  # refused before anything ran


def test_startup_summary_counts_agent_workers_per_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'summary.db'}", workers=3, model="test:echo")
    _startup_summary(settings, "127.0.0.1", 8000, 2)
    lines = capsys.readouterr().err.splitlines()
    assert "  agent workers: 3 in each of the 2 server processes (AICHATS_WORKERS; --processes)" in lines
    _startup_summary(settings, "127.0.0.1", 8000, 1)
    lines = capsys.readouterr().err.splitlines()
    assert "  agent workers: 3 in this process (AICHATS_WORKERS)" in lines
