"""Tries to open TCP connections to services on the host's loopback from inside a replica:
PostgreSQL (127.0.0.1:5432), Ember's own API port and a listener the test opened, then the
host's own non-loopback address; each target is given as "host:port".

Why it must fail: a replica has a network namespace of its own. Its 127.0.0.1 is its own
loopback, where nothing listens, and the default `network: egress` lets it out only to the
outside world, never back to the host (its loopback or its private addresses), so every
connect() fails (refused, unreachable or timed out). A database, a cache or Ember's
admin API bound to loopback are not reachable from a tenant's code. The test also deploys a
copy declaring `network: none`, whose namespace lets nothing out at all.
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
