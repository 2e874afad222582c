"""The one rule for every URL the service fetches (webhooks now; tool servers and fetches later).

A URL is checked in two steps. :func:`parse_url` is pure syntax: http or https, a valid host
(a hostname of LDH labels, an IPv4 address in any of the spellings browsers accept, or a
bracketed IPv6 address), a port from 1 to 65535, no control, format or whitespace character
anywhere. :func:`resolve` then looks the host up once and refuses any address that is not
global unicast, unless the caller's policy allows private addresses.

IPv6 addresses that carry an IPv4 one are judged as follows (a decision of issue 10):
IPv4-mapped ``::ffff:a.b.c.d`` (what a dual-stack socket uses for IPv4) and the well-known
NAT64 prefix ``64:ff9b::/96`` (what DNS64 answers on IPv6-only hosts) are judged by the IPv4
address they carry; the deprecated or local forms, IPv4-compatible ``::a.b.c.d``,
IPv4-translated ``::ffff:0:a.b.c.d``, 6to4 ``2002::/16``, Teredo ``2001::/32`` and local-use
NAT64 ``64:ff9b:1::/48``, are refused outright.

DNS rebinding: the check must hold for the address actually connected to, so
:func:`async_client` returns an httpx2 client whose connections resolve and check the host
inside ``connect_tcp`` and then connect to one of those checked addresses, never resolving
again. The URL, and so the ``Host`` header, TLS SNI and certificate verification, keep the
original hostname. Redirects are not followed; a caller that follows them goes through the same
check on each hop. Proxies from the environment are not used (a proxy would resolve the name
itself).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import os
import re
import socket
import ssl
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import httpcore2
import httpx2

from aichats.errors import Invalid

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_SHARED = ipaddress.IPv4Network("100.64.0.0/10")
_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_REFUSED_V6 = (  # forms that embed IPv4 and are deprecated or local: refused whatever they carry
    (ipaddress.IPv6Network("64:ff9b:1::/48"), "a local-use NAT64 address"),
    (ipaddress.IPv6Network("::/96"), "an IPv4-compatible address"),
    (ipaddress.IPv6Network("::ffff:0:0:0/96"), "an IPv4-translated address"),
    (ipaddress.IPv6Network("2002::/16"), "a 6to4 address"),
    (ipaddress.IPv6Network("2001::/32"), "a Teredo address"),
)


class OutboundURLError(Invalid, ValueError):
    """A URL the service will not fetch; the API answers it 422 in the error envelope."""


@dataclass(frozen=True)
class Policy:
    """Who is fetching: whether private addresses are allowed, and the setting that allows them.

    Each feature passes its own (``AICHATS_WEBHOOKS_ALLOW_PRIVATE_URLS`` for webhooks), so a
    refusal names the setting the operator would change.
    """

    allow_private: bool
    setting: str


@dataclass(frozen=True)
class Target:
    """A URL that passed :func:`parse_url`: its scheme, normalized host and effective port."""

    url: str
    scheme: str
    host: str  # ASCII: a lowercase hostname, or an IP address without brackets
    port: int


def parse_url(url: str) -> Target:
    """The URL's parts if its syntax is acceptable, else :class:`OutboundURLError` (no DNS)."""
    for char in url:
        if unicodedata.category(char)[0] in "CZ":
            raise OutboundURLError(
                f"the url contains a control, format or whitespace character ({char!r}); "
                "percent-encode it in the path or query"
            )
    scheme = url.partition(":")[0].lower()
    if scheme not in _DEFAULT_PORTS or not url[len(scheme) :].startswith("://"):
        raise OutboundURLError("the url must start with http:// or https://")
    authority = re.split(r"[/?#\\]", url[len(scheme) + 3 :], maxsplit=1)[0].rpartition("@")[2]
    if authority.startswith("[") and "]" not in authority:
        raise OutboundURLError("the url's IPv6 address has no closing bracket")
    try:
        parsed = httpx2.URL(url)
    except httpx2.InvalidURL as error:  # bad port digits, bad IPv6, hostname IDNA cannot encode
        raise OutboundURLError(f"the url is not valid: {error}") from None
    raw_host = parsed.raw_host.decode("ascii")
    if not raw_host:
        raise OutboundURLError("the url has no host")
    host = str(literal_address(raw_host) or _hostname(raw_host))
    port = parsed.port if parsed.port is not None else _DEFAULT_PORTS[scheme]
    if not 1 <= port <= 65535:
        raise OutboundURLError(f"the url's port must be from 1 to 65535, not {port}")
    return Target(url=url, scheme=scheme, host=host, port=port)


def literal_address(host: str) -> IPAddress | None:
    """The address an IP-literal host means, None for a hostname, or OutboundURLError.

    IPv4 follows the WHATWG URL standard, as browsers and ``inet_aton`` do: a host whose last
    label is a number is an IPv4 address in decimal, ``0x`` hex or ``0`` octal parts, the last
    part filling the remaining bytes (``2130706433``, ``0x7f.1`` and ``0177.0.0.1`` all mean
    127.0.0.1); anything else ending in a number is refused.
    """
    if ":" in host:
        try:
            address = ipaddress.IPv6Address(host)
        except ValueError:
            raise OutboundURLError(f"the url's host [{host}] is not a valid IPv6 address") from None
        if address.scope_id is not None:
            raise OutboundURLError("the url's IPv6 address must not carry a zone (%)")
        return address
    parts = host.split(".")
    if len(parts) > 1 and parts[-1] == "":
        parts.pop()
    if not _is_number(parts[-1]):
        return None
    numbers = [n for n in map(_number, parts) if n is not None]
    if (
        len(parts) > 4
        or len(numbers) != len(parts)
        or any(n > 255 for n in numbers[:-1])
        or numbers[-1] >= 256 ** (5 - len(numbers))
    ):
        raise OutboundURLError(f"the url's host {host} is not a valid IPv4 address")
    return ipaddress.IPv4Address(numbers[-1] + sum(n << (8 * (3 - i)) for i, n in enumerate(numbers[:-1])))


def _is_number(part: str) -> bool:
    return part.isascii() and (part.isdigit() or part[:2].lower() == "0x")


def _number(part: str) -> int | None:
    """One part of a WHATWG IPv4 address, or None when it is not a number."""
    if part[:2].lower() == "0x":
        digits, base, allowed = part[2:], 16, "0123456789abcdefABCDEF"
    elif len(part) > 1 and part[0] == "0":
        digits, base, allowed = part[1:], 8, "01234567"
    else:
        digits, base, allowed = part, 10, "0123456789"
    if not part or not all(c in allowed for c in digits):
        return None
    return int(digits or "0", base)


def _hostname(host: str) -> str:
    """The host if it is a valid DNS name (httpx2 has IDNA-encoded and lowercased it)."""
    name = host[:-1] if host.endswith(".") else host
    if len(name) > 253:
        raise OutboundURLError("the url's host is longer than 253 characters")
    for label in name.split("."):
        if not label:
            raise OutboundURLError(f"the url's host {host} has an empty label")
        if len(label) > 63:
            raise OutboundURLError(f"the url's host has a label longer than 63 characters ({label[:20]}...)")
        if not _LABEL.fullmatch(label):
            raise OutboundURLError(
                f"the url's host label {label!r} must be letters, digits, '-' or '_', and not start or end with '-'"
            )
    return host


def refusal(address: IPAddress) -> str | None:
    """Why the service must not connect to the address, or None for a global unicast one."""
    if address.is_loopback:
        return "a loopback address"
    if address.is_unspecified:
        return "an unspecified address"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            reason = refusal(address.ipv4_mapped)
            return reason and f"the IPv4-mapped form of {address.ipv4_mapped}, {reason}"
        if address in _NAT64:
            carried = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
            reason = refusal(carried)
            return reason and f"the NAT64 form of {carried}, {reason}"
        for network, reason in _REFUSED_V6:
            if address in network:
                return reason
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if isinstance(address, ipaddress.IPv4Address) and address in _SHARED:
        return "a shared (carrier-grade NAT) address"
    if isinstance(address, ipaddress.IPv6Address) and address.is_site_local:
        return "a site-local address"
    if address.is_private and not address.is_reserved:
        return "a private address"
    if not address.is_global or address.is_reserved:
        return "a reserved or non-public address"
    if isinstance(address, ipaddress.IPv6Address) and address not in _GLOBAL_UNICAST:
        return "not a global unicast address"
    return None


RESOLVE_SECONDS = 5.0


def _getaddrinfo(host: str, port: int) -> list[IPAddress]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))


async def resolve(host: str, port: int, policy: Policy) -> list[IPAddress]:
    """The host's addresses, looked up once; OutboundURLError if any is refused.

    Any refused address refuses the host: a name may not mix public and private answers.
    A failed lookup raises :class:`socket.gaierror`.
    """
    literal = literal_address(host)
    if literal is not None:
        addresses = [literal]
    else:
        try:  # a name server that never answers must not hold the request (or a thread) long
            async with asyncio.timeout(RESOLVE_SECONDS):
                addresses = await asyncio.to_thread(_getaddrinfo, host, port)
        except TimeoutError:
            raise socket.gaierror(f"looking up {host} took over {RESOLVE_SECONDS:g} s") from None
    if not addresses:
        raise socket.gaierror(f"{host} has no address")
    if not policy.allow_private:
        for address in addresses:
            reason = refusal(address)
            if reason:
                where = f"is {address}" if literal is not None else f"{host} resolves to {address}"
                raise OutboundURLError(
                    f"the url's host {where}, {reason}, which the service does not connect to; "
                    f"the operator can allow private addresses with {policy.setting}=true"
                )
    return addresses


async def check_url(url: str, policy: Policy) -> Target:
    """The URL's parts if it is acceptable now: its syntax, and every address its host resolves to.

    For an early 422 when a URL is saved; the fetch itself checks again (see :func:`async_client`).
    """
    target = parse_url(url)
    try:
        await resolve(target.host, target.port, policy)
    except OSError:
        raise OutboundURLError(f"the url's host {target.host} does not resolve") from None
    return target


class _CheckedBackend(httpcore2.AsyncNetworkBackend):
    """httpcore's network backend, with each TCP connection made to an address just checked."""

    def __init__(self, policy: Policy) -> None:
        self._policy = policy
        self._backend = httpcore2.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                addresses = await resolve(host, port, self._policy)
        except TimeoutError:
            raise httpcore2.ConnectTimeout(f"looking up {host} took over {timeout} s") from None
        except OSError as error:
            raise httpcore2.ConnectError(f"{host} does not resolve: {error}") from None
        failure: Exception | None = None
        for address in addresses:  # the checked addresses, in the resolver's order
            try:
                return await self._backend.connect_tcp(
                    str(address), port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore2.ConnectError, httpcore2.ConnectTimeout) as error:
                failure = error
        assert failure is not None
        raise failure

    async def connect_unix_socket(self, *args: Any, **kwargs: Any) -> httpcore2.AsyncNetworkStream:
        raise httpcore2.ConnectError("outbound fetches use TCP only")

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


def ssl_context() -> ssl.SSLContext:
    """The TLS context of every outbound client, made once per process (and again only if
    SSL_CERT_FILE or SSL_CERT_DIR change): loading the system's certificates takes about
    20 ms (measured here), which each client, and so each MCP session of a turn, paid twice."""
    return _ssl_context(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


@functools.cache
def _ssl_context(cert_file: str | None, cert_dir: str | None) -> ssl.SSLContext:
    return httpx2.create_ssl_context()  # reads those two variables itself


class _CheckedTransport(httpx2.AsyncHTTPTransport):
    """httpx2's transport over a connection pool that uses :class:`_CheckedBackend`."""

    def __init__(self, policy: Policy) -> None:
        super().__init__(verify=ssl_context(), trust_env=False)
        # httpx2 builds its pool without a way to pass a network backend: replace it, with
        # httpx2's default limits (httpx2 is pinned, so its private ``_pool`` stays put).
        self._pool = httpcore2.AsyncConnectionPool(
            ssl_context=ssl_context(),
            max_connections=100,
            max_keepalive_connections=20,
            keepalive_expiry=5.0,
            network_backend=_CheckedBackend(policy),
        )


def async_client(policy: Policy, **options: Any) -> httpx2.AsyncClient:
    """An httpx2 client for outbound fetches: every connection checked, no redirects, no proxy.

    Callers still run :func:`parse_url` on a URL first, for its syntax checks.
    """
    return httpx2.AsyncClient(
        transport=_CheckedTransport(policy),
        follow_redirects=False,
        trust_env=False,
        **options,
    )
