"""The outbound rule's connections: resolved once, checked, and made to the checked address.

DNS cannot be controlled here, so names under ``.test`` are answered by a resolver patched in
for the test (``socket.getaddrinfo``, which :mod:`aichats.outbound` calls); the servers, the
sockets and TLS are real.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpcore2
import httpx2
import pytest

from aichats import outbound

pytestmark = pytest.mark.anyio
ALLOW = outbound.Policy(allow_private=True, setting="AICHATS_TEST_ALLOW_PRIVATE_URLS")
REFUSE = outbound.Policy(allow_private=False, setting="AICHATS_TEST_ALLOW_PRIVATE_URLS")


class Server:
    """A real HTTP(S) server on 127.0.0.1 recording each request's Host header and TLS SNI."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.hosts: list[str] = []
        self.sni: list[str | None] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive

            def do_GET(self) -> None:
                server.hosts.append(self.headers["host"])
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.http.server_address[1]
        if tls is not None:
            tls.sni_callback = lambda sock, name, ctx: self.sni.append(name)  # type: ignore[assignment]
            self.http.socket = tls.wrap_socket(self.http.socket, server_side=True)
        threading.Thread(target=self.http.serve_forever, daemon=True).start()


class Resolver:
    """Answers for test names: each lookup of a name takes its next answer (the last repeats)."""

    def __init__(self) -> None:
        self.answers: dict[str, list[str]] = {}
        self.asked: dict[str, int] = {}


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> Resolver:
    fake = Resolver()
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if name not in fake.answers:
            return real(host, port, *args, **kwargs)
        n = fake.asked[name] = fake.asked.get(name, 0) + 1
        address = fake.answers[name][min(n, len(fake.answers[name])) - 1]
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, int(port)))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return fake


@pytest.fixture
def server() -> Iterator[Server]:
    running = Server()
    yield running
    running.http.shutdown()


async def test_a_connection_goes_to_the_address_that_was_checked(server: Server, resolver: Resolver) -> None:
    """One lookup per connection: a later answer (127.0.0.2, where nothing listens) is never used."""
    resolver.answers["pinned.test"] = ["127.0.0.1", "127.0.0.2"]
    async with outbound.async_client(ALLOW) as http:
        for _ in range(3):  # kept alive: the one checked connection serves them all
            response = await http.get(f"http://pinned.test:{server.port}/hook")
            assert response.status_code == 204
    assert resolver.asked["pinned.test"] == 1
    assert server.hosts == [f"pinned.test:{server.port}"] * 3  # the Host header keeps the name


async def test_a_refused_address_is_never_connected_to(server: Server, resolver: Resolver) -> None:
    resolver.answers["inside.test"] = ["127.0.0.1"]
    async with outbound.async_client(REFUSE) as http:
        with pytest.raises(outbound.OutboundURLError, match=r"resolves to 127\.0\.0\.1, a loopback address"):
            await http.get(f"http://inside.test:{server.port}/")
        with pytest.raises(outbound.OutboundURLError, match=r"IPv4-mapped form of 127\.0\.0\.1"):
            await http.get(f"http://[::ffff:127.0.0.1]:{server.port}/")
        with pytest.raises(outbound.OutboundURLError, match=r"is 127\.0\.0\.1, a loopback"):
            await http.get(f"http://0x7f.1:{server.port}/")
    assert server.hosts == []


async def test_redirects_are_not_followed(resolver: Resolver) -> None:
    class Redirect(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(302)
            self.send_header("location", "http://127.0.0.1:9/")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return None

    http_server = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=http_server.serve_forever, daemon=True).start()
    try:
        async with outbound.async_client(ALLOW) as http:
            response = await http.get(f"http://127.0.0.1:{http_server.server_address[1]}/")
        assert response.status_code == 302
    finally:
        http_server.shutdown()


@pytest.fixture
def tls_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    """An HTTPS server whose self-signed certificate names ``pinned.test``, trusted via SSL_CERT_FILE."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-keyout", str(key),
         "-out", str(cert), "-subj", "/CN=pinned.test", "-addext", "subjectAltName=DNS:pinned.test"],
        check=True, capture_output=True,
    )  # fmt: skip
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    running = Server(context)
    yield running
    running.http.shutdown()


async def test_tls_names_and_verifies_the_url_host_not_the_address(tls_server: Server, resolver: Resolver) -> None:
    resolver.answers["pinned.test"] = ["127.0.0.1"]
    resolver.answers["other.test"] = ["127.0.0.1"]
    async with outbound.async_client(ALLOW) as http:
        response = await http.get(f"https://pinned.test:{tls_server.port}/")
        assert response.status_code == 204
        assert tls_server.sni == ["pinned.test"] and tls_server.hosts == [f"pinned.test:{tls_server.port}"]
        with pytest.raises(httpx2.ConnectError, match="certificate"):  # same address, a name the cert lacks
            await http.get(f"https://other.test:{tls_server.port}/")


def test_clients_share_one_tls_context(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading the system's certificates takes about 20 ms: every outbound client (each MCP
    session of a turn, each webhook sender) used to load them twice."""
    monkeypatch.setenv("SSL_CERT_DIR", "/nonexistent-so-this-test-gets-a-context-of-its-own")
    made: list[ssl.SSLContext] = []
    real = httpcore2.default_ssl_context

    def counted(**kwargs: Any) -> ssl.SSLContext:
        made.append(real(**kwargs))
        return made[-1]

    monkeypatch.setattr(httpcore2, "default_ssl_context", counted)
    clients = [outbound.async_client(ALLOW) for _ in range(3)]
    assert len(made) == 1
    assert all(client._transport._pool._ssl_context is made[0] for client in clients)  # type: ignore[attr-defined]
