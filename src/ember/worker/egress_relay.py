"""Inside a sandbox, the door to its egress proxy: a listener on the sandbox's own loopback
(HTTP_PROXY and HTTPS_PROXY name it) that carries each connection to the proxy's Unix socket,
bound into the sandbox at EMBER_EGRESS_SOCKET.

Why a relay: a sandbox's network namespace has nothing but its own loopback, and HTTP clients
(urllib, requests, httpx, curl) know proxies by host and port, not by socket path. The proxy
outside decides what may be reached; this only moves bytes. The warm host starts it, and the
replicas it forks share its network namespace and so its relay; a spawned worker starts its
own. Standard library only: it runs in model environments.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading

from ember.egress import SANDBOX_PROXY_ENV, SANDBOX_RELAY_PORT

_CHUNK = 64 * 1024


def start() -> None:
    """Listen on 127.0.0.1:RELAY_PORT if this process is in a sandbox with an egress proxy
    and nothing in its namespace listens there yet."""
    path = os.environ.get(SANDBOX_PROXY_ENV)
    if not path:
        return
    try:
        listener = socket.create_server(("127.0.0.1", SANDBOX_RELAY_PORT))
    except OSError:
        return  # the warm host's relay already serves this namespace
    threading.Thread(
        target=_accept, args=(listener, path), name="egress-relay", daemon=True
    ).start()


def _accept(listener: socket.socket, path: str) -> None:
    while True:
        client, _ = listener.accept()
        threading.Thread(target=_relay, args=(client, path), daemon=True).start()


def _relay(client: socket.socket, path: str) -> None:
    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        upstream.connect(path)
    except OSError:
        client.close()
        upstream.close()
        return
    back = threading.Thread(target=_pipe, args=(upstream, client), daemon=True)
    back.start()
    _pipe(client, upstream)
    back.join()
    client.close()
    upstream.close()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while chunk := source.recv(_CHUNK):
            sink.sendall(chunk)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)
