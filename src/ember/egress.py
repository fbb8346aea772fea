"""Which outgoing requests Ember may make: none to loopback, private or link-local addresses.

Ember sends requests to URLs its callers choose: prediction webhooks (from the control plane)
and file inputs given as URLs (downloaded by the worker). Unchecked, a caller could aim them at
this machine's own services (a database on 127.0.0.1, Ray's ports), the private network, or a
cloud's metadata service at 169.254.169.254, which hands out credentials: server-side request
forgery (SSRF). So those addresses are refused unless the operator allows them, with
`ember serve --allow-egress 10.0.0.0/8` or EMBER_EGRESS_ALLOW, which replicas inherit.

The check that matters is made on the address actually connected to, not only on the URL: a
name can resolve to a public address when a URL is checked and to 127.0.0.1 a moment later
(DNS rebinding). Two ways, one per HTTP stack Ember uses:

- `EgressPolicy.connect` (worker downloads, urllib): resolves once, checks every address, and
  connects to a checked one; the host name still goes into the Host header and TLS.
- `EgressPolicy.connection_check` (webhooks, httpx): an httpcore `trace` hook that sees each new
  connection right after its TCP handshake, before a byte is sent, and refuses it unless its
  peer address is allowed. A pooled connection was checked when it was made. It sees only the
  connections of the request it is attached to, so redirects are not followed where it is used.

`check_url` checks a URL up front (every address its host resolves to), for
an early, clear refusal such as a 400 when a prediction is created.

Standard library only, and nothing else of Ember: the worker imports this inside model
environments, which hold none of Ember's dependencies.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import re
import socket
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ALLOW_ENV",
    "SANDBOX_PROXY_ENV",
    "SANDBOX_PROXY_SOCKET",
    "SANDBOX_RELAY_PORT",
    "EgressPolicy",
    "EgressRefused",
    "origin_entry",
    "refusal_reason",
]

ALLOW_ENV = "EMBER_EGRESS_ALLOW"
# Inside a replica's sandbox: where its egress proxy's socket is bound, and the port of the
# relay to it on the sandbox's own loopback (`ember.worker.egress_relay`).
SANDBOX_PROXY_ENV = "EMBER_EGRESS_SOCKET"
SANDBOX_PROXY_SOCKET = "/run/ember/egress.sock"
SANDBOX_RELAY_PORT = 3128

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_SEPARATORS = re.compile(r"[\s,]+")
_HOSTNAME = re.compile(r"[a-z0-9_]([a-z0-9_.-]*[a-z0-9_])?\.?")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT, RFC 6598
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # IPv4 reached through a NAT64 gateway


class EgressRefused(ValueError):
    """An outgoing request Ember will not make; the message says which, why and how to allow."""


def _refused(host: str, address: str, reason: str) -> EgressRefused:
    shown = address if host == address else f"{host} ({address})"
    return EgressRefused(
        f"refused to connect to {shown}: it is {reason}. Ember sends no requests to loopback, "
        "private or link-local addresses unless allowed, so that the URLs a prediction names "
        "cannot reach internal services. To allow it, start the server with "
        f"`ember serve --allow-egress {host}` (or a range such as 10.0.0.0/8), or set "
        f"{ALLOW_ENV}."
    )


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (::ffff:a.b.c.d, 6to4, NAT64), if any:
    connecting to one reaches the other."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _spellings(ip: Address) -> list[Address]:
    """`ip` and the IPv4 address it stands for: allowing 127.0.0.1 allows ::ffff:127.0.0.1."""
    inner = _embedded_ipv4(ip) if isinstance(ip, ipaddress.IPv6Address) else None
    return [ip] if inner is None else [ip, inner]


def refusal_reason(ip: Address) -> str | None:
    """Why `ip` is refused unless allowlisted ("a loopback address (this machine)"), or None
    for a public address."""
    if isinstance(ip, ipaddress.IPv6Address) and (inner := _embedded_ipv4(ip)) is not None:
        reason = refusal_reason(inner)
        return f"{reason}, written as IPv6" if reason else None
    if ip.is_unspecified:
        return "an unspecified address (0.0.0.0 or ::, which reaches this machine)"
    if ip.is_loopback:
        return "a loopback address (this machine)"
    if ip.is_link_local:
        return "a link-local address (where cloud metadata services answer)"
    if ip.is_multicast:
        return "a multicast address"
    if ip in _SHARED:
        return "a shared address (carrier-grade NAT, 100.64.0.0/10)"
    if ip.is_reserved:
        return "a reserved address"
    if ip.is_private:
        return "a private address"
    return None if ip.is_global else "a non-public address"


@dataclass(frozen=True)
class _Rule:
    """One allowlist entry: an address range or a host name, on any port or on one."""

    network: Network | None
    hostname: str | None
    port: int | None

    def matches(self, host: str, ips: Iterable[Address], port: int | None) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.network is not None:
            return any(ip in self.network for ip in ips)
        return _normal_host(host) == self.hostname


def _normal_host(host: str) -> str:
    return host.strip("[]").rstrip(".").lower()


def _split_port(entry: str) -> tuple[str, str | None]:
    """`[::1]:8000`, `host:8000`, `10.0.0.1:80` -> (host, port); a bare IPv6 keeps its colons."""
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        return host, rest.removeprefix(":") if rest else None
    if entry.count(":") == 1:
        host, port = entry.split(":")
        return host, port
    return entry, None


def _parse_rule(entry: str) -> _Rule:
    host, port_text = _split_port(entry.lower())
    port = None
    if port_text is not None:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"egress allowlist entry {entry!r}: {port_text!r} is not a port")
        port = int(port_text)
    try:
        return _Rule(ipaddress.ip_network(host, strict=False), None, port)
    except ValueError:
        pass
    if not _HOSTNAME.fullmatch(host):
        raise ValueError(
            f"egress allowlist entry {entry!r} is not an address, a range (10.0.0.0/8), a host "
            "name, or one of those with a port (host:8000, [::1]:8000)"
        )
    return _Rule(None, _normal_host(host), port)


def origin_entry(url: str) -> str:
    """The allowlist entry for exactly `url`'s host and port (`127.0.0.1:8000`,
    `[::1]:8000`, `ember.example.com:443`)."""
    host, port = _target(url)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _target(url: str) -> tuple[str, int]:
    """The host and port a URL connects to; EgressRefused for what is not an http(s) URL."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise EgressRefused(f"{url[:80]!r} is not a valid URL: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise EgressRefused(f"{url[:80]!r} is not an http(s) URL; only those are fetched")
    return parts.hostname, port or _DEFAULT_PORTS[scheme]


def _ip(address: str | Address) -> Address:
    # A scoped IPv6 address (fe80::1%eth0) parses with its scope; getaddrinfo may give one.
    return address if not isinstance(address, str) else ipaddress.ip_address(address)


@dataclass(frozen=True)
class EgressPolicy:
    """The addresses outgoing requests may reach: every public one, plus `allow`.

    `allow` holds entries (each may itself be a comma- or space-separated list): an address
    (127.0.0.1, ::1), a range (10.0.0.0/8, fd00::/8) or a host name (minio.internal), each
    optionally with a port (127.0.0.1:8000, [::1]:8000, minio.internal:9000) to allow only
    that port. A host name is matched as written in the URL, whatever it resolves to: allow a
    name only if you trust whoever controls its DNS. Bad entries raise ValueError at once.
    """

    allow: tuple[str, ...] = ()
    _rules: tuple[_Rule, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        entries = tuple(e for text in self.allow for e in _SEPARATORS.split(text) if e)
        object.__setattr__(self, "allow", entries)
        object.__setattr__(self, "_rules", tuple(_parse_rule(e) for e in entries))

    @classmethod
    def from_env(cls) -> EgressPolicy:
        """The policy `ember serve` set up (EMBER_EGRESS_ALLOW), in the server and in the
        replicas, which inherit its environment."""
        return cls((os.environ.get(ALLOW_ENV, ""),))

    # -- deciding ---------------------------------------------------------------------------

    def allows(self, host: str, ip: str | Address, port: int | None = None) -> bool:
        """Whether a request for `host` may connect to `ip` (on `port`, for port entries)."""
        return self._refusal(host, _ip(ip), port) is None

    def check_address(self, host: str, ip: str | Address, port: int | None = None) -> None:
        """Raise EgressRefused unless a request for `host` may connect to `ip` on `port`."""
        address = _ip(ip)
        reason = self._refusal(host, address, port)
        if reason is not None:
            raise _refused(_normal_host(host), str(address), reason)

    def _refusal(self, host: str, ip: Address, port: int | None) -> str | None:
        reason = refusal_reason(ip)
        if reason is None:
            return None
        ips = _spellings(ip)
        return None if any(rule.matches(host, ips, port) for rule in self._rules) else reason

    # -- URLs, before connecting ------------------------------------------------------------

    async def check_url(self, url: str) -> None:
        """Raise EgressRefused unless `url` is http(s) and every address its host resolves to
        is allowed (resolved without blocking the event loop). A name that does not resolve
        is not refused: the request fails on its own, and the check at connect time stands."""
        host, port = _target(url)
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror:
            return
        self._check_resolved(host, port, infos)

    def _check_resolved(self, host: str, port: int, infos: list[tuple[Any, ...]]) -> None:
        for info in infos:
            self.check_address(host, info[4][0], port)

    # -- at connect time --------------------------------------------------------------------

    def connect(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        source_address: tuple[str, int] | None = None,
    ) -> socket.socket:
        """A TCP connection to `host` through an address this policy allows.

        The name is resolved once; every address must pass (as in `check_url`), and the socket
        connects to one of those very addresses, so a second lookup cannot swap in another.
        `timeout` may be http.client's "use the default" sentinel: `create_connection` takes it.
        """
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        self._check_resolved(host, port, infos)
        error: OSError | None = None
        for info in infos:
            try:
                return socket.create_connection((info[4][0], port), timeout, source_address)
            except OSError as exc:
                error = exc
        raise error or OSError(f"{host} resolved to no address")

    def connection_check(self, host: str) -> Callable[[str, dict[str, Any]], Awaitable[None]]:
        """An httpcore `trace` hook (`extensions={"trace": ...}` on an httpx request to `host`)
        that refuses each new connection whose peer address is not allowed.

        It runs when the TCP handshake is done and before TLS or the request, closing the
        connection and raising EgressRefused out of the request. A connection whose peer
        address cannot be told is refused too.
        """

        async def check(event: str, info: dict[str, Any]) -> None:
            if event != "connection.connect_tcp.complete":
                return
            stream = info["return_value"]
            peer = stream.get_extra_info("server_addr")
            try:
                if peer is None:
                    raise EgressRefused(f"could not tell which address {host} connected to")
                self.check_address(host, peer[0], peer[1])
            except EgressRefused:
                await stream.aclose()
                raise

        return check
