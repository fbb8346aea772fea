"""The same attempt as `hostile/reach-host` (TCP connections to PostgreSQL, Ember's own port
and other services on the host, given as "host:port"), from a package that declares
`network: none`.

Why it must fail: with `network: none` a replica's network namespace has nothing but its own
loopback; no connection leaves it at all, to the host or anywhere else.
"""

import json
import socket


def _connect(target: str) -> str:
    host, _, port = target.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1.5):
            return "connected"
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"


def predict(targets: str = "[]") -> str:
    """`targets`: a JSON list of "host:port"."""
    return json.dumps({target: _connect(target) for target in json.loads(targets)})
