"""What does running replicas on Ray cost, next to running them as local processes?

In one run, two `ember serve` processes with the same trivial package deployed
(`bench/models/trivial`, `predict(text) -> text.upper()`, so everything measured is platform):

  local   `ember serve` (the default runtime: replicas are this machine's processes)
  ray     `ember serve --runtime ray`, on a two-node Ray cluster started on this machine
          (Ray's cluster utilities: a head, and a worker node each replica is placed on)

For each, interleaved round by round:
  - request overhead: `--requests` sequential `Prefer: wait` predictions on one keep-alive
    connection to a ready replica, p50 and p99 (HTTP → control plane → runtime → replica and
    back; for Ray, each prediction also crosses a Ray streaming call to the node's agent);
  - cold start: the deployment at zero replicas with its warm host ready (the tier Ember keeps
    for a small package), then one prediction: the time to its answer, `--starts` times.

Ray Serve's own scale-from-zero on this machine, measured for coldstart.md, is 1.69-2.22 s.

    python bench/ray_runtime.py [--requests 300] [--starts 5] [--rounds 3] [--markdown]
                                [--json out.json]

Targets: Ray adds at most 5 ms to a request's p50 and at most 25 ms to a warm-host start (a
fixed cost: one resource reservation and one call to the node's agent, so an absolute bound,
not a ratio of two ~10 ms figures), and that start stays under Ray Serve's 1.69 s. Every
process this starts is stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from common import (
    NoiseMeter,
    close_all,
    finish_report,
    interrupted,
    interruptible,
    percentile,
    print_verdicts,
)
from harness import HERE, EmberServe
from rich.console import Console
from rich.table import Table

TRIVIAL = HERE / "models" / "trivial"
RAY_SERVE_SCALE_FROM_ZERO = 1.69  # s, the fastest in coldstart.md


def predict(client: httpx.Client, path: str) -> float:
    began = time.perf_counter()
    response = client.post(
        f"{path}/predictions", json={"input": {"text": "hi"}}, headers={"Prefer": "wait"}
    )
    elapsed = time.perf_counter() - began
    body = response.json()
    if response.status_code != 201 or body.get("output") != "HI":
        raise RuntimeError(f"unexpected answer {response.status_code}: {body}")
    return elapsed


def request_overhead(server: EmberServe, count: int) -> list[float]:
    with server.client() as client:
        for _ in range(20):
            predict(client, server.deployment_path)
        return [predict(client, server.deployment_path) for _ in range(count)]


def wait_status(client: httpx.Client, path: str, ready: int, timeout: float = 120) -> None:
    """Until `ready` replicas are up, none starting, and the next start's tier is ready."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get(path).json()["status"]
        replicas = status["replicas"]
        if replicas == {"starting": 0, "ready": ready} and status["cold_start"]["ready"]:
            return
        time.sleep(0.05)
    raise RuntimeError(f"{path} did not settle at {ready} ready: {status}")


def cold_start(server: EmberServe) -> float:
    """One prediction to a deployment at zero replicas whose warm host is ready."""
    path = server.deployment_path
    with server.client() as client:
        client.patch(path, json={"min_instances": 0, "idle_timeout": 0})
        wait_status(client, path, 0)
        return predict(client, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--starts", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, interrupted)
    console = Console()
    from ray.cluster_utils import Cluster

    tmp = Path(tempfile.mkdtemp(prefix="ember-bench-ray-"))
    os.environ["EMBER_RAY_NODE_DIR"] = str(tmp / "nodes")
    cluster = Cluster(
        initialize_head=True,
        connect=False,
        head_node_args={"num_cpus": 0, "include_dashboard": False},
    )
    cluster.add_node(num_cpus=4)
    cluster.wait_for_nodes()
    env = dict(os.environ)
    servers = {
        "local": EmberServe(tmp / "local", tmp / "local.log", env=env),
        "ray": EmberServe(
            tmp / "ray",
            tmp / "ray.log",
            env=env,
            args=("--runtime", "ray", "--ray-address", cluster.address),
        ),
    }
    latencies: dict[str, list[float]] = {name: [] for name in servers}
    starts: dict[str, list[float]] = {name: [] for name in servers}
    began = time.monotonic()

    def cleanup(stopped: bool) -> None:
        close_all(servers.values())
        cluster.shutdown()

    with interruptible(console, cleanup) as run:
        for name, server in servers.items():
            console.print(f"starting {name} and deploying the trivial package")
            server.start()
            server.deploy(TRIVIAL, "trivial")
        noise = NoiseMeter()
        for round_number in range(args.rounds):
            order = list(servers) if round_number % 2 == 0 else list(reversed(servers))
            for name in order:
                server = servers[name]
                with server.client() as client:
                    client.patch(server.deployment_path, json={"min_instances": 1})
                    wait_status(client, server.deployment_path, 1)
                latencies[name] += request_overhead(server, args.requests)
                starts[name] += [cold_start(server) for _ in range(args.starts)]
            console.print(f"round {round_number + 1}/{args.rounds} done")
        noise_report = noise.finish()
    if run.stopped:
        return

    table = Table(title="Ember: Ray runtime vs local processes (trivial model, loopback)")
    headers = ["runtime", "request p50", "request p99", "warm-host start (median)", "starts"]
    for header in headers:
        table.add_column(header, justify="right")
    rows = []
    summary: dict[str, Any] = {}
    for name in servers:
        ordered = sorted(latencies[name])
        p50, p99 = percentile(ordered, 0.5), percentile(ordered, 0.99)
        start = statistics.median(starts[name])
        summary[name] = {"p50": p50, "p99": p99, "start_median": start, "starts": starts[name]}
        row = [name, f"{p50 * 1000:.2f} ms", f"{p99 * 1000:.2f} ms", f"{start * 1000:.0f} ms",
               ", ".join(f"{s * 1000:.0f}" for s in starts[name])]  # fmt: skip
        rows.append(row)
        table.add_row(*row)
    console.print(table)
    local, ray_ = summary["local"], summary["ray"]
    added = (ray_["p50"] - local["p50"]) * 1000
    verdicts = [
        (
            "Ray adds ≤ 5 ms to a request's p50",
            f"+{added:.2f} ms ({ray_['p50'] * 1000:.2f} vs {local['p50'] * 1000:.2f} ms)",
            "PASS" if added <= 5 else "FAIL",
        ),
        (
            "Ray adds ≤ 25 ms to a warm-host start",
            f"+{(ray_['start_median'] - local['start_median']) * 1000:.0f} ms "
            f"({ray_['start_median'] * 1000:.0f} vs {local['start_median'] * 1000:.0f} ms)",
            "PASS" if ray_["start_median"] - local["start_median"] <= 0.025 else "FAIL",
        ),
        (
            f"warm-host start on Ray < Ray Serve's scale from zero ({RAY_SERVE_SCALE_FROM_ZERO} s)",
            f"{ray_['start_median']:.3f} s",
            "PASS" if ray_["start_median"] < RAY_SERVE_SCALE_FROM_ZERO else "FAIL",
        ),
    ]
    print_verdicts(console, verdicts)
    finish_report(
        console, args, noise_report, time.monotonic() - began, headers, rows, verdicts,
        {"results": summary},
    )  # fmt: skip


if __name__ == "__main__":
    main()
