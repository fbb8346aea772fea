"""`ember serve`: the platform and its HTTP gateway in one process, on one event loop.

uvicorn serves it, with limits it lacks on what a client may make it wait for and hold
(GuardedHttp): together with the API's body limits (api/limits.py), no client holds a
connection indefinitely by sending slowly, nor makes the server buffer huge headers.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import uvicorn
import uvloop
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from ember.api.app import create_app, metrics_app
from ember.control.platform import Platform
from ember.egress import ALLOW_ENV, EgressPolicy, origin_entry
from ember.runtime.base import Runtime
from ember.runtime.local import LocalRuntime
from ember.runtime.sandbox.confinement import PUBLIC_URL_ENV

HEADER_TIMEOUT = 10.0  # EMBER_HEADER_TIMEOUT, seconds
MAX_HEADER_BYTES = 64 * 1024  # EMBER_MAX_HEADER_BYTES: the request line and headers together


class _Refused(Exception):
    """Raised in a parser callback to stop parsing a request refused already."""


class GuardedHttp(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol (httptools, the one it picks here), with the two limits it
    lacks: it waits for a request's headers indefinitely (its keep-alive timer runs between
    requests only, and not before the first), and takes headers of any size (its
    `h11_max_incomplete_event_size` applies to its h11 protocol only). So a client that
    sends its headers slowly, or a megabyte of them, held a connection or the memory.

    Here a request's line and headers must be whole within `header_timeout` seconds of the
    connection's start (the first request) or of the request's first byte (the next ones),
    else 408; and they may not be longer than `max_header_bytes`, else 431. Either answer
    closes the connection. (Bodies are timed by the API: api/limits.py.)"""

    header_timeout = HEADER_TIMEOUT
    max_header_bytes = MAX_HEADER_BYTES

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timer: asyncio.TimerHandle | None = None
        self.reading_headers = True
        # Bytes of unfinished headers, from the request's second read on (the read it began
        # in also holds the previous request's end: at most one read more than the limit
        # gets in before the headers are whole, and then their length is checked exactly).
        self.header_bytes = 0
        self.began = False  # whether a request began in the read being parsed
        self.refusal: tuple[int, str] | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._time_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._untime_headers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self.began = False
        super().data_received(data)
        if self.reading_headers and not self.began and not self.transport.is_closing():
            self.header_bytes += len(data)
            if self.header_bytes > self.max_header_bytes:
                self._refuse(431, self._too_long())

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.began = self.reading_headers = True
        self.header_bytes = 0
        self._time_headers()

    def on_headers_complete(self) -> None:
        self.reading_headers = False
        self._untime_headers()
        length = len(self.url) + sum(len(name) + len(value) for name, value in self.headers)
        if length > self.max_header_bytes:
            self.refusal = (431, self._too_long())
            raise _Refused  # uvicorn answers a parser error with send_400_response: below
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        if self.refusal is None:
            super().send_400_response(msg)
        else:
            self._refuse(*self.refusal)

    def _time_headers(self) -> None:
        if self.header_timer is None:
            self.header_timer = self.loop.call_later(self.header_timeout, self._headers_late)

    def _untime_headers(self) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None

    def _headers_late(self) -> None:
        self.header_timer = None
        self._refuse(
            408,
            f"the request's headers did not arrive within {self.header_timeout:g} s "
            "(EMBER_HEADER_TIMEOUT on the server)",
        )

    def _too_long(self) -> str:
        return (
            f"the request's line and headers are longer than {self.max_header_bytes:,} bytes "
            "(EMBER_MAX_HEADER_BYTES on the server)"
        )

    def _refuse(self, status: int, message: str) -> None:
        """Answer `status` with `message` and close the connection. (Behind a response still
        being sent, of a request before this one, the connection is only closed: an answer
        would be read as part of that response.)"""
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:
            body = message.encode()
            head = [STATUS_LINE[status]]
            head += [
                name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers
            ]
            head.append(
                b"content-type: text/plain; charset=utf-8\r\n"
                b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body)
            )
            self.transport.write(b"".join(head) + body)
        self.transport.close()


def guarded_http() -> type[GuardedHttp]:
    """GuardedHttp with the limits set in the environment (EMBER_HEADER_TIMEOUT seconds,
    EMBER_MAX_HEADER_BYTES), for this server's uvicorn configurations."""
    limits = {
        "header_timeout": float(os.environ.get("EMBER_HEADER_TIMEOUT", HEADER_TIMEOUT)),
        "max_header_bytes": int(os.environ.get("EMBER_MAX_HEADER_BYTES", MAX_HEADER_BYTES)),
    }
    return type("GuardedHttp", (GuardedHttp,), limits)


def make_runtime(kind: str, data_dir: Path, ray_address: str | None) -> Runtime:
    """Local processes, or a Ray cluster (imported only when asked for: Ray is optional)."""
    if kind == "local":
        return LocalRuntime(data_dir)
    from ember.runtime.ray_cluster import PLACE_TIMEOUT_SECONDS, RayRuntime

    # Where each node keeps environments and packages (the same path on every node), and how
    # long an upload waits for a node that can build and check it.
    return RayRuntime(
        data_dir,
        ray_address,
        os.environ.get("EMBER_RAY_NODE_DIR"),
        float(os.environ.get("EMBER_RAY_PLACE_TIMEOUT", PLACE_TIMEOUT_SECONDS)),
    )


def export_egress_policy(allow_egress: Sequence[str], public_url: str) -> None:
    """Put the egress allowlist in this process's environment, where the webhook sender and
    every replica (which inherit it) read it: the operator's entries plus Ember's own public
    URL, since replicas download uploaded files through signed links to it. Bad entries raise
    ValueError before anything starts."""
    policy = EgressPolicy((*allow_egress, origin_entry(public_url)))
    os.environ[ALLOW_ENV] = ",".join(policy.allow)
    os.environ[PUBLIC_URL_ENV] = public_url  # all a `network: none` replica may reach


async def serve(
    host: str,
    port: int,
    data_dir: Path,
    database_url: str | None = None,
    public_url: str | None = None,
    announce: Callable[[str | None, str], None] = lambda token, url: None,
    deploy: Sequence[Path] = (),
    progress: Callable[[str], None] = lambda line: None,
    runtime: str = "local",
    ray_address: str | None = None,
    allow_egress: Sequence[str] = (),
    metrics_port: int | None = None,
) -> None:
    """Start the platform, tell `announce` the first admin token (if just made) and the URL,
    then serve until SIGINT/SIGTERM, which drains running predictions before exiting.

    `allow_egress`: loopback, private or link-local addresses, ranges or hosts that webhooks
    and input URLs may reach all the same (see ember.egress). `metrics_port`: also serve
    `/metrics` there, on the same host, without a token (on `port` it takes an admin's)."""
    url = public_url or f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    export_egress_policy(allow_egress, url)
    platform = Platform(
        data_dir,
        database_url,
        public_url=url,
        admin_token=os.environ.get("EMBER_ADMIN_TOKEN"),
        runtime=make_runtime(runtime, data_dir, ray_address),
    )
    app = create_app(platform, started=True)
    http = guarded_http()
    # Listening first: a port in use stops `ember serve` before the platform starts.
    metrics = (
        None if metrics_port is None else await serve_metrics(platform, host, metrics_port, http)
    )
    progress(f"replica sandbox: {platform.runtime.sandbox_detail}")
    try:
        first_token = await platform.start()
        for folder in deploy:
            await platform.deploy_folder(folder, "ember", progress)
        server = uvicorn.Server(
            _uvicorn_config(app, host, port, http, lifespan="on", timeout_graceful_shutdown=30)
        )
        announce(first_token, url)
        await server.serve()
    finally:
        if metrics is not None:
            await metrics.shutdown()


async def serve_metrics(
    platform: Platform, host: str, port: int, http: type[GuardedHttp]
) -> uvicorn.Server:
    """Start serving `/metrics` without a token on `port` (for a Prometheus scraper that
    cannot send one); stop it with its `shutdown()`. Started and stopped by hand, not with
    `serve()`: signals are the main server's (uvicorn's `serve()` would take them over)."""
    config = _uvicorn_config(
        metrics_app(platform), host, port, http, lifespan="off", timeout_graceful_shutdown=5
    )
    config.load()
    server = uvicorn.Server(config)
    server.lifespan = config.lifespan_class(config)  # what serve() would set before startup()
    await server.startup()
    return server


def _uvicorn_config(
    app: Any, host: str, port: int, http: type[GuardedHttp], **options: Any
) -> uvicorn.Config:
    """How each of this server's listeners is served: GuardedHttp, quiet logs (Ember logs
    what matters itself), and `options` (lifespan, shutdown grace)."""
    return uvicorn.Config(
        app, host=host, port=port, http=http, log_level="warning", access_log=False, **options
    )


def run(**options: Any) -> None:
    """Blocking form of `serve` for the command line (same keyword arguments)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # uvicorn picks uvloop only in Server.run(); serving from our own loop, ask for it here.
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(serve(**options))
    except KeyboardInterrupt:
        # uvicorn re-raises the Ctrl-C it caught once it has drained and stopped: done.
        pass
    finally:
        loop.close()
