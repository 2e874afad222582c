"""The web app's sign-in session, over plain HTTP: the cookie, and what it may do."""

from __future__ import annotations

import httpx2

from tests.support.api import assert_error
from tests.support.servers import LiveServer

WEB = {"X-Aichats-Web": "1"}


def test_sign_in_sets_a_locked_down_session_cookie(live_server: LiveServer) -> None:
    account = live_server.account()
    with httpx2.Client(base_url=live_server.root) as web:
        assert_error(web.post("/web/session", json={"api_key": account.key}), 403, "forbidden", "x-aichats-web")
        wrong = web.post("/web/session", json={"api_key": "ak_wrong"}, headers=WEB)
        assert_error(wrong, 401, "unauthorized", "not valid")
        assert "set-cookie" not in wrong.headers
        assert_error(web.post("/web/session", json={}, headers=WEB), 422, "invalid_request")
        response = web.post("/web/session", json={"api_key": account.key}, headers=WEB)
        assert response.status_code == 200, response.text
        assert response.json()["user_id"] == account.user_id
        cookie = response.headers["set-cookie"]
        assert cookie.startswith(f"aichats_session={account.key};")
        for attribute in ("HttpOnly", "Secure", "SameSite=strict", "Path=/"):
            assert attribute in cookie
        assert "expires" not in cookie.lower() and "max-age" not in cookie.lower()  # a browser-session cookie

        signed_out = web.delete("/web/session")
        assert signed_out.status_code == 200
        assert "aichats_session=" in signed_out.headers["set-cookie"]
        assert "max-age=0" in signed_out.headers["set-cookie"].lower()


def test_the_cookie_signs_api_calls_and_changes_need_the_web_header(live_server: LiveServer) -> None:
    account = live_server.account()
    cookie = {"Cookie": f"aichats_session={account.key}"}
    with httpx2.Client(base_url=live_server.api, headers=cookie) as api:
        assert api.get("/ai_chats").json()["data"] == []
        assert httpx2.get(f"{live_server.root}/web/session", headers=cookie).json()["user_id"] == account.user_id
        # A cross-site form or script can send the cookie but not this header: refused, nothing stored.
        assert_error(api.post("/ai_chats", json={"message_text": "hi"}), 403, "forbidden", "x-aichats-web")
        assert api.get("/ai_chats").json()["data"] == []
        created = api.post("/ai_chats", json={"message_text": "hi"}, headers=WEB)
        assert created.status_code == 201
        assert [c["id"] for c in api.get("/ai_chats").json()["data"]] == [created.json()["id"]]
    with httpx2.Client(base_url=live_server.api, headers={"Cookie": "aichats_session=ak_revoked_or_wrong"}) as api:
        assert_error(api.get("/ai_chats"), 401, "unauthorized", "not valid")
    assert_error(httpx2.get(f"{live_server.root}/web/session"), 401, "unauthorized")


def test_the_page_and_its_assets_come_from_the_server(live_server: LiveServer) -> None:
    page = httpx2.get(live_server.root + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "https://" not in page.text and "http://" not in page.text  # no CDN
    script = httpx2.get(live_server.root + "/static/app.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert httpx2.get(live_server.root + "/static/nothing.js").status_code == 404
