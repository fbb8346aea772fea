"""The only way out of a sandbox's network: an HTTP proxy on a Unix socket that applies the
server's egress rules to every connection.

Every sandbox has a network namespace of its own, whose loopback is not the host's: nothing
in it reaches PostgreSQL on 127.0.0.1:5432, Ember's own port, the private network or a cloud's
metadata address directly. What a model may reach goes through here: a relay inside the
sandbox (`ember.worker.egress_relay`, at HTTP_PROXY/HTTPS_PROXY) carries each connection over
the Unix socket bound into it, and this proxy resolves the destination, checks every address
with the same `EgressPolicy` as webhooks and input URLs (so `--allow-egress` applies), and
connects to a checked one. HTTPS is tunnelled (CONNECT) and stays end to end; plain HTTP is
forwarded one request per connection.

A deployment with `network: none` gets a proxy that reaches Ember's own public URL alone: its
inputs, uploaded files fetched through signed links, keep working, and nothing else does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import socket
import tempfile
import urllib.parse
from pathlib import Path

from ember.egress import EgressPolicy, EgressRefused

logger = logging.getLogger("ember.runtime")

HEAD_LIMIT = 64 * 1024
HEAD_TIMEOUT = 30.0
CONNECT_TIMEOUT = 30.0
_CHUNK = 64 * 1024


class _Refused(Exception):
    """A request this proxy will not carry: (HTTP status, reason for the client)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _destination(method: str, target: str) -> tuple[str, int, str | None]:
    """(host, port, the request line's target for the origin) of a proxy request; the target
    is None for CONNECT, whose bytes pass through untouched."""
    if method == "CONNECT":
        host, sep, port = target.rpartition(":")
        if not sep or not port.isdigit():
            raise _Refused(400, f"CONNECT needs host:port, not {target[:80]!r}")
        return host.strip("[]"), int(port), None
    parts = urllib.parse.urlsplit(target)
    if parts.scheme != "http" or not parts.hostname:
        raise _Refused(400, "send an absolute http:// URL, or CONNECT for https")
    path = parts.path or "/"
    return parts.hostname, parts.port or 80, path + (f"?{parts.query}" if parts.query else "")


class EgressProxy:
    """One proxy on one Unix socket; `only` limits it to one host and port (`network: none`:
    Ember's own public URL)."""

    def __init__(self, policy: EgressPolicy, only: tuple[str, int] | None = None) -> None:
        self.policy = policy
        self.only = only
        self._folder = Path(tempfile.mkdtemp(prefix="ember-egress-"))  # short: sun_path
        self.path = self._folder / "egress.sock"
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(self._serve, str(self.path))

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
        shutil.rmtree(self._folder, ignore_errors=True)

    async def _serve(
        self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter
    ) -> None:
        try:
            try:
                async with asyncio.timeout(HEAD_TIMEOUT):
                    head = await client_in.readuntil(b"\r\n\r\n")
            except (asyncio.LimitOverrunError, asyncio.IncompleteReadError, TimeoutError):
                return
            if len(head) > HEAD_LIMIT:
                return
            try:
                await self._forward(head, client_in, client_out)
            except _Refused as refused:
                reason = refused.reason.replace("\r", " ").replace("\n", " ")
                client_out.write(
                    f"HTTP/1.1 {refused.status} {reason}\r\nContent-Type: text/plain\r\n"
                    f"Content-Length: {len(reason.encode())}\r\nConnection: close\r\n\r\n"
                    f"{reason}".encode()
                )
                await client_out.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            client_out.close()

    async def _forward(
        self, head: bytes, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter
    ) -> None:
        request_line, _, headers = head.decode("latin-1").partition("\r\n")
        method, _, rest = request_line.partition(" ")
        target, _, version = rest.partition(" ")
        host, port, origin_target = _destination(method.upper(), target)
        upstream = await self._connect(host, port)
        origin_in, origin_out = await asyncio.open_connection(sock=upstream, limit=_CHUNK)
        try:
            if origin_target is None:
                client_out.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                # One request per connection: a kept-alive connection could be reused for
                # another host, which this proxy would not have checked.
                kept = [
                    line
                    for line in headers.split("\r\n")
                    if line
                    and not line.lower().startswith(("proxy-", "connection:", "keep-alive:"))
                ]
                origin_out.write(
                    f"{method} {origin_target} {version}\r\n".encode("latin-1")
                    + "".join(f"{line}\r\n" for line in kept).encode("latin-1")
                    + b"Connection: close\r\n\r\n"
                )
            await asyncio.gather(_pipe(client_in, origin_out), _pipe(origin_in, client_out))
        finally:
            origin_out.close()

    async def _connect(self, host: str, port: int) -> socket.socket:
        if self.only is not None and (host.lower(), port) != self.only:
            raise _Refused(
                403,
                f"{host}:{port} refused: this deployment has `network: none` (only Ember's own "
                "files are reachable); set `network: egress` in its ember.yaml to reach the "
                "internet",
            )
        try:
            return await asyncio.to_thread(self.policy.connect, host, port, CONNECT_TIMEOUT)
        except EgressRefused as exc:
            raise _Refused(403, str(exc)) from None
        except OSError as exc:
            raise _Refused(502, f"could not connect to {host}:{port}: {exc}") from None


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    try:
        while chunk := await source.read(_CHUNK):
            sink.write(chunk)
            await sink.drain()
        if sink.can_write_eof():
            sink.write_eof()
    except (ConnectionError, OSError):
        sink.close()
