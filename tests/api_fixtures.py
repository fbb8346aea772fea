"""Helpers for the API tests: a real `ember serve` on SQLite or PostgreSQL (or with its
replicas on a Ray cluster), the official
`replicate` client pointed at it, polling, a loopback webhook receiver and process checks."""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import replicate
from server import TOKEN, EmberServer, postgres_database, print_log, ray_cluster

MODELS = Path(__file__).parent / "models"
BACKENDS = ["sqlite", "postgres"]
TERMINAL = frozenset({"succeeded", "failed", "canceled"})


@contextlib.contextmanager
def serving(backend: str, data_dir: Path) -> Iterator[EmberServer]:
    """A started `ember serve` on `backend` with `data_dir`; stopped (and the database
    dropped) afterwards. The server log is printed when the block fails.

    `ray` is SQLite with the replicas on a two-node Ray cluster started for the block."""
    with contextlib.ExitStack() as stack:
        database_url = None
        extra_args: list[str] = []
        if backend == "postgres":
            database_url = stack.enter_context(postgres_database())
        if backend == "ray":
            cluster, _ = stack.enter_context(
                # Logical CPUs for every model's replica to stay up through its keep-alive.
                ray_cluster(
                    data_dir.with_name(data_dir.name + "-nodes"),
                    {"num_cpus": 16},
                    [{"num_cpus": 16}],
                )
            )
            extra_args = ["--runtime", "ray", "--ray-address", cluster.address]
        server = EmberServer(data_dir, database_url, extra_args)
        try:
            server.start()
            yield server
        except BaseException:
            print_log(server)
            raise
        finally:
            server.stop()


def replicate_client(server: EmberServer, token: str = TOKEN) -> replicate.Client:
    """The official client; only `base_url` differs from talking to Replicate."""
    return replicate.Client(api_token=token, base_url=server.url)


def poll(
    http: httpx.Client, prediction_id: str, until: frozenset[str] = TERMINAL, timeout: float = 20
) -> dict[str, Any]:
    """GET the prediction until its status is in `until`; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        response = http.get(f"/v1/predictions/{prediction_id}")
        assert response.status_code == 200, response.text
        body = response.json()
        if body["status"] in until:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"prediction {prediction_id} still {body['status']}: {body}")
        time.sleep(0.05)


# -- a webhook receiver on loopback ----------------------------------------------------------


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.body)


@dataclass
class WebhookReceiver:
    """A tiny threaded HTTP server on 127.0.0.1 that records every POST and answers 200."""

    max_body: int = 1 << 20
    deliveries: list[Delivery] = field(default_factory=list)
    url: str = ""

    def __post_init__(self) -> None:
        self._arrived = threading.Condition()

    def __enter__(self) -> WebhookReceiver:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 10  # a stuck connection does not pin a thread forever

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                if length > receiver.max_body:
                    self.send_response(413)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    self.close_connection = True
                    return
                body = self.rfile.read(length)
                delivery = Delivery(
                    self.path, {k.lower(): v for k, v in self.headers.items()}, body
                )
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()
                with receiver._arrived:
                    receiver.deliveries.append(delivery)
                    receiver._arrived.notify_all()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def wait(self, count: int = 1, timeout: float = 10) -> list[Delivery]:
        with self._arrived:
            arrived = self._arrived.wait_for(lambda: len(self.deliveries) >= count, timeout)
        assert arrived, f"{len(self.deliveries)} of {count} webhook calls arrived"
        return list(self.deliveries)


# -- processes --------------------------------------------------------------------------------


def child_pids(pid: int) -> list[int]:
    """Direct children of `pid`, from /proc."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces and parentheses
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            children.append(int(entry.name))
    return children


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_gone(pids: list[int], timeout: float = 10) -> list[int]:
    """The pids still alive after `timeout` seconds (empty when all exited)."""
    deadline = time.monotonic() + timeout
    while (left := [p for p in pids if alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


__all__ = [
    "BACKENDS",
    "MODELS",
    "TERMINAL",
    "TOKEN",
    "Delivery",
    "WebhookReceiver",
    "alive",
    "child_pids",
    "cmdline",
    "poll",
    "print_log",
    "replicate_client",
    "serving",
    "wait_gone",
]
