"""A real `ember serve` on SQLite or PostgreSQL (or with its replicas on a Ray cluster) for
the API tests, the official `replicate` client pointed at it, and polling a prediction."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import replicate

from tests.support.server import TOKEN, EmberServer, postgres_database, print_log, ray_cluster

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
