"""`ember serve` with one package deployed and warm, for the benchmarks that compare a
deployment with a peer (bench/llm.py, bench/embeddings.py).

The data dir (under ~/.cache/ember-bench/ember/) is emptied at start except `envs/`, so a
package's environment (torch, llama-cpp-python...) is built once and reused like on a real
host. The server runs in its own process group; `close()` stops it and whatever it started.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from coldstart import free_port, kill_mentioning, launch, log_tail, package_archive, stop_group

ROOT = Path(__file__).resolve().parents[1]
ADMIN_TOKEN = "bench-admin-token"
OWNER = "ember"


class EmberServe:
    def __init__(
        self, data_dir: Path, env: dict[str, str], log: Path, args: tuple[str, ...] = ()
    ) -> None:
        self.data_dir = data_dir
        self.args = list(args)  # more `ember serve` options, e.g. --runtime ray
        self.env = {**env, "EMBER_ADMIN_TOKEN": ADMIN_TOKEN}
        self.log = log
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        self.proc: subprocess.Popen[Any] | None = None
        self.deployment_path = ""

    def client(self, timeout: float = 1800) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers=self.headers, timeout=timeout, trust_env=False
        )

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for entry in self.data_dir.iterdir():
            if entry.name != "envs":
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        self.log.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "ember", "serve", "--port", str(self.port),
                   "--data-dir", str(self.data_dir), *self.args]  # fmt: skip
        self.proc = launch(command, env=self.env, cwd=ROOT, log=self.log)
        deadline = time.monotonic() + 60
        with self.client() as client:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"ember serve exited: {log_tail(self.log, 8)}")
                with contextlib.suppress(httpx.TransportError):
                    if client.get("/health", timeout=1).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"ember serve did not come up: {log_tail(self.log, 8)}")
                time.sleep(0.05)

    def deploy(self, package: Path, name: str, ready_timeout: float = 600) -> str:
        """Upload `package` as model OWNER/name (building its environment the first time),
        deploy it on cpu at min_instances 1 / max_instances 1 and wait for a ready replica.
        Returns the name OpenAI requests use (`owner/name`)."""
        assert self.proc is not None
        with self.client() as client:
            client.post("/v1/models", json={"owner": OWNER, "name": name})
            response = client.post(
                f"/v1/models/{OWNER}/{name}/versions",
                files={"package": ("package.tar.gz", package_archive(package))},
            )
            if response.status_code != 201:
                raise RuntimeError(
                    f"upload: HTTP {response.status_code} {response.text[:800]}\n"
                    f"{log_tail(self.log, 12)}"
                )
            version = response.json().get("id")
            response = client.post(
                "/v1/deployments",
                json={"name": name, "model": f"{OWNER}/{name}", "version": version,
                      "hardware": "cpu", "min_instances": 1, "max_instances": 1},
            )  # fmt: skip
            if response.status_code != 201:
                raise RuntimeError(f"deployment: HTTP {response.status_code} {response.text[:500]}")
            deployment = response.json()
            owner = deployment.get("owner") or OWNER
            name = deployment.get("name") or name
            self.deployment_path = f"/v1/deployments/{owner}/{name}"
            deadline = time.monotonic() + ready_timeout
            while True:
                status = client.get(self.deployment_path, timeout=30).json().get("status", {})
                if (status.get("replicas") or {}).get("ready", 0) >= 1:
                    return f"{owner}/{name}"
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"no ready replica (status {status}): {log_tail(self.log, 12)}"
                    )
                time.sleep(0.1)

    def pids(self) -> list[int]:
        """The server and every process under it (warm host, replicas)."""
        return process_tree(self.proc.pid) if self.proc is not None else []

    def close(self) -> None:
        stop_group(self.proc)
        kill_mentioning(str(self.data_dir))  # a replica left behind by a crashed server


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (from /proc/<pid>/task/<tid>/children)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{current}/task").iterdir():
                with contextlib.suppress(OSError):
                    todo += [int(c) for c in (task / "children").read_text().split()]
    return found
