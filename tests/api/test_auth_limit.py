"""The limit on failed authentication (issue 10, item 4), on a real server.

The server allows 3 failures per client address; each test talks from loopback
addresses of its own (127.0.0.N, a different TCP peer for the server), so that tests
do not share a count, and so that "another client" is really another address.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import httpx2
import pytest

from tests.support.accounts import Account
from tests.support.api import assert_error, assert_private
from tests.support.servers import LiveServer, serving

LIMIT = 3
WEB = {"X-Aichats-Web": "1"}
_addresses = itertools.count(2)


@pytest.fixture(scope="module")
def guarded_server(new_database: Callable[[], str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = {"AICHATS_WORKERS": "0", "AICHATS_AUTH_FAILURES_PER_MINUTE": str(LIMIT)}
    with serving(new_database(), tmp_path_factory.mktemp("auth-limit"), env) as server:
        yield server


def from_new_address(base_url: str) -> httpx2.Client:
    """A client whose connections come from a loopback address no other test uses."""
    transport = httpx2.HTTPTransport(local_address=f"127.0.0.{next(_addresses)}")
    return httpx2.Client(base_url=base_url, transport=transport, timeout=10)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_blocked(response: httpx2.Response) -> None:
    assert_error(response, 429, "rate_limit_exceeded", "retry in")
    wait = int(response.headers["retry-after"])
    assert 1 <= wait <= 60 // LIMIT
    assert f"retry in {wait} s" in response.json()["error"]["message"]
    assert_private(response)


def test_bad_keys_past_the_limit_get_429_and_other_clients_do_not(guarded_server: LiveServer) -> None:
    user, unused = guarded_server.account(), guarded_server.account()
    with from_new_address(guarded_server.api) as guesser:
        assert guesser.get("/ai_chats", headers=bearer(user.key)).status_code == 200
        for n in range(LIMIT):
            assert_error(guesser.get("/ai_chats", headers=bearer(f"ak_guess{n}")), 401, "unauthorized")
        assert_blocked(guesser.get("/ai_chats", headers=bearer("ak_guess_more")))
        assert_blocked(guesser.post("/ai_chats", json={"message_text": "x"}, headers=bearer("ak_guess_post")))
        # A right key that this server has not seen working is not even checked: no guess is confirmed.
        assert_blocked(guesser.get("/ai_chats", headers=bearer(unused.key)))
        assert_blocked(guesser.get("/ai_chats", headers={"Cookie": f"aichats_session={unused.key}"}))
        # A key already in use keeps working: a guesser behind the same address locks no user out.
        assert guesser.get("/ai_chats", headers=bearer(user.key)).status_code == 200
        # No credentials at all is not an attempt: still a plain 401.
        assert_error(guesser.get("/ai_chats"), 401, "unauthorized")
    with from_new_address(guarded_server.api) as other:
        assert_error(other.get("/ai_chats", headers=bearer("ak_guess_elsewhere")), 401, "unauthorized")
        assert other.get("/ai_chats", headers=bearer(unused.key)).status_code == 200
    with httpx2.Client(base_url=guarded_server.api, headers=bearer(unused.key)) as plain:
        assert plain.get("/ai_chats").json()["data"] == []  # the blocked POST created nothing


def test_a_key_revoked_while_blocked_fails_and_stops_working(guarded_server: LiveServer) -> None:
    user = guarded_server.account()
    with from_new_address(guarded_server.api) as client:
        assert client.get("/ai_chats", headers=bearer(user.key)).status_code == 200
        for n in range(LIMIT):
            assert_error(client.get("/ai_chats", headers=bearer(f"ak_guess{n}")), 401, "unauthorized")
        key_id = guarded_server.cli("keys", "list", "--user", user.user_id).stdout.split()[0]
        guarded_server.cli("keys", "revoke", key_id)
        assert_error(client.get("/ai_chats", headers=bearer(user.key)), 401, "unauthorized")
        assert_blocked(client.get("/ai_chats", headers=bearer(user.key)))


def test_failed_web_sign_ins_past_the_limit_get_429(guarded_server: LiveServer) -> None:
    account: Account = guarded_server.account()
    with from_new_address(guarded_server.root) as web:
        # Failures on the API and on the sign-in form share one count.
        assert_error(web.get("/api/v1/ai_chats", headers=bearer("ak_guess_api")), 401, "unauthorized")
        for n in range(LIMIT - 1):
            wrong = web.post("/web/session", json={"api_key": f"ak_guess{n}"}, headers=WEB)
            assert_error(wrong, 401, "unauthorized", "not valid")
        blocked = web.post("/web/session", json={"api_key": "ak_guess_more"}, headers=WEB)
        assert_blocked(blocked)
        refused = web.post("/web/session", json={"api_key": account.key}, headers=WEB)
        assert_blocked(refused)
        assert "set-cookie" not in refused.headers
        assert_blocked(web.get("/web/session", headers={"Cookie": "aichats_session=ak_guess_cookie"}))
    with from_new_address(guarded_server.root) as other:
        signed_in = other.post("/web/session", json={"api_key": account.key}, headers=WEB)
        assert signed_in.status_code == 200, signed_in.text
        assert signed_in.headers["set-cookie"].startswith(f"aichats_session={account.key};")


def test_behind_a_local_proxy_each_forwarded_client_has_its_own_count(guarded_server: LiveServer) -> None:
    """uvicorn trusts X-Forwarded-For from 127.0.0.1 (a reverse proxy on the same machine)."""
    with httpx2.Client(base_url=guarded_server.api, timeout=10) as proxy:
        behind = {"X-Forwarded-For": "203.0.113.7"}
        for n in range(LIMIT):
            assert_error(proxy.get("/ai_chats", headers={**behind, **bearer(f"ak_g{n}")}), 401, "unauthorized")
        assert_blocked(proxy.get("/ai_chats", headers={**behind, **bearer("ak_g_more")}))
        neighbour = {"X-Forwarded-For": "203.0.113.8"}
        assert_error(proxy.get("/ai_chats", headers={**neighbour, **bearer("ak_g")}), 401, "unauthorized")
