"""A real `ember serve` process for API tests, on SQLite or on a fresh PostgreSQL database."""

from __future__ import annotations

import io
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg

from ember.packages.archive import write_archive

POSTGRES = "postgresql://postgres@127.0.0.1:5432"
TOKEN = "test-admin-token"
# Test receivers (webhooks, files to download) listen on loopback, which a server reaches
# only when allowed; tests of that refusal start a server with `allow_egress=()`.
LOOPBACK = ("127.0.0.1",)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def postgres_database() -> Iterator[str]:
    """A new, empty PostgreSQL database, dropped afterwards."""
    name = "ember_test_" + secrets.token_hex(6)
    with psycopg.connect(f"{POSTGRES}/test", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{POSTGRES}/{name}"
    finally:
        with psycopg.connect(f"{POSTGRES}/test", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def ray_cluster(
    node_dir: Path, head: dict[str, Any], workers: Sequence[dict[str, Any]] = ()
) -> Iterator[tuple[Any, list[Any]]]:
    """A real multi-node Ray cluster on this machine (Ray's own test utilities: each node its
    own raylet) and its worker nodes in the order given, shut down afterwards. Servers started
    meanwhile keep each node's Ember data under `node_dir` (EMBER_RAY_NODE_DIR)."""
    from ray.cluster_utils import Cluster

    os.environ["EMBER_RAY_NODE_DIR"] = str(node_dir)
    head = {
        "include_dashboard": False,
        # Notice a lost node in about a second, not Ray's default half minute.
        "_system_config": {"health_check_period_ms": 300, "health_check_failure_threshold": 3},
        **head,
    }
    cluster = Cluster(initialize_head=True, connect=False, head_node_args=head)
    try:
        nodes = [cluster.add_node(**worker) for worker in workers]
        cluster.wait_for_nodes()
        yield cluster, nodes
    finally:
        cluster.shutdown()
        os.environ.pop("EMBER_RAY_NODE_DIR", None)


def package_archive(path: Path) -> bytes:
    """A package folder as the .tar.gz `ember deploy` uploads."""
    buffer = io.BytesIO()
    write_archive(path, buffer)
    return buffer.getvalue()


@contextmanager
def running(
    data_dir: Path,
    database_url: str | None = None,
    extra_args: Sequence[str] = (),
    **options: Any,
) -> Iterator[EmberServer]:
    """An `ember serve` for the life of the block (a module fixture's body); `options` go to
    EmberServer (allow_egress, env). Its log is printed if the block fails."""
    server = EmberServer(data_dir, database_url, extra_args, **options)
    server.start()
    try:
        yield server
    except BaseException:
        print_log(server)
        raise
    finally:
        server.stop()


def print_log(server: EmberServer, tail: int = 6000) -> None:
    """The end of the server's log, for a failing test's output."""
    if server.log_path.exists():
        print(f"--- ember serve log ({server.log_path}) ---")
        print(server.log_path.read_text(errors="replace")[-tail:])


class EmberServer:
    """Start, kill and restart `ember serve` on a free port with a given data dir and DB.

    `allow_egress` become `--allow-egress` options (none from the test's environment);
    `env` is added to the server's environment."""

    def __init__(
        self,
        data_dir: Path,
        database_url: str | None = None,
        extra_args: Sequence[str] = (),
        allow_egress: Sequence[str] = LOOPBACK,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.database_url = database_url
        self.extra_args = list(extra_args)  # e.g. --runtime ray --ray-address ...
        self.allow_egress = list(allow_egress)
        self.env = dict(env or {})
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / "server.log"

    def start(self, timeout: float = 30.0) -> None:
        command = [
            sys.executable,
            "-m",
            "ember",
            "serve",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
        ]
        if self.database_url:
            command += ["--database-url", self.database_url]
        command += self.extra_args
        command += [f"--allow-egress={entry}" for entry in self.allow_egress]
        env = {**os.environ, "EMBER_ADMIN_TOKEN": TOKEN}
        env.pop("EMBER_EGRESS_ALLOW", None)  # the allowlist is `allow_egress`
        env.update(self.env)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(command, env=env, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ember serve exited:\n{self.log_path.read_text()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError(f"ember serve did not come up:\n{self.log_path.read_text()}")

    def kill(self) -> None:
        """kill -9: no draining, no flushing."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def client(self, token: str = TOKEN) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=60
        )

    def cli(
        self, *args: str, token: str = TOKEN, url: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the real `ember` command against this server."""
        env = {**os.environ, "EMBER_URL": url or self.url, "EMBER_TOKEN": token, "COLUMNS": "200"}
        return subprocess.run(
            [sys.executable, "-m", "ember", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=90,
        )

    def cli_process(self, *args: str, token: str = TOKEN) -> subprocess.Popen[str]:
        """The real `ember` command, running: for what it prints while it runs, and Ctrl-C."""
        env = {**os.environ, "EMBER_URL": self.url, "EMBER_TOKEN": token}
        return subprocess.Popen(
            [sys.executable, "-m", "ember", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def predict(self, deployment: str, **inputs: object) -> dict:
        """One prediction of deployment ember/`deployment`, answered when it ends."""
        with self.client() as client:
            response = client.post(
                f"/v1/deployments/ember/{deployment}/predictions",
                json={"input": inputs},
                headers={"Prefer": "wait=60"},
            )
        assert response.status_code == 201, response.text
        return response.json()

    def deploy(self, package: Path, owner: str, name: str) -> dict:
        """Create the model (if needed) and upload `package` as its new version."""
        with self.client() as client:
            client.post("/v1/models", json={"owner": owner, "name": name})
            response = client.post(
                f"/v1/models/{owner}/{name}/versions",
                files={"package": ("package.tar.gz", package_archive(package))},
                timeout=600,  # the first build of an environment (torch: a minute or more)
            )
            assert response.status_code == 201, response.text
            return response.json()
