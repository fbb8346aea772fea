"""Hostile packages against the replica sandbox, through a real `ember serve` (sandboxed by
default): each tries one way out of its replica and must be stopped, while the server keeps
serving the other tenant's deployment throughout and the hostile deployment itself serves a
normal prediction afterwards.

Alice (owner `alice`) runs `alice/squares` (always one replica), has uploaded a file and has a
prediction's output on disk; Bob (owner `bob`, a deploy token) uploads the packages of
tests/models/hostile, each of which says in its docstring what it tries and why that must
fail. The test knows the host's paths and pids and hands them to Bob's models as inputs: the
sandbox must hold even against a model that knows exactly where to look.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.support.paths import MODELS, model_path
from tests.support.processes import alive, child_pids, cmdline, wait_gone
from tests.support.server import TOKEN, EmberServer, package_archive, running

pytestmark = pytest.mark.timeout(120)

HOSTILE = MODELS / "hostile"
NEIGHBOUR = "alice/squares"
UPLOADED = b"alice's notes, for alice only"


@dataclass
class Site:
    """The server, its two tenants, and what of Alice's lies on the host."""

    server: EmberServer
    tokens: dict[str, str]  # "alice", "bob" -> deploy tokens
    neighbour_processes: list[int]  # alice/squares' replica: its worker and what runs it
    uploaded: Path  # Alice's uploaded file
    output: Path  # an output of Alice's prediction
    package: Path  # Alice's package, as the server unpacked it
    deployed: set[str] = field(default_factory=set)  # Bob's deployments made so far

    @property
    def data_dir(self) -> Path:
        return self.uploaded.parent.parent

    def client(self, who: str) -> httpx.Client:
        return self.server.client(self.tokens[who])


def _predict(client: httpx.Client, deployment: str, **inputs: object) -> dict:
    """One prediction of `deployment` ("owner/name"), answered when it ends."""
    response = client.post(
        f"/v1/deployments/{deployment}/predictions",
        json={"input": inputs},
        headers={"Prefer": "wait=60"},
        timeout=90,
    )
    assert response.status_code == 201, response.text
    return response.json()


def _worker_processes(server: EmberServer) -> set[int]:
    """The server's descendants that run a worker, a warm host, or the sandbox around one."""
    assert server.process is not None
    found: set[int] = set()
    parents = [server.process.pid]
    while parents:
        children = child_pids(parents.pop())
        parents += children
        found.update(pid for pid in children if "ember.worker" in cmdline(pid))
    return found


def _processes_with(marker: str) -> list[int]:
    """Every process on the machine whose command line holds `marker`."""
    return [
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit() and marker in cmdline(int(entry.name)) and alive(int(entry.name))
    ]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    # No egress allowed to the server either: what the replicas reach is the sandbox's doing.
    with running(tmp_path_factory.mktemp("ember-sandbox-escapes"), allow_egress=()) as server:
        tokens = {}
        with server.client() as admin:
            for owner in ("alice", "bob"):
                made = admin.post(
                    "/v1/tokens", json={"name": owner, "owner": owner, "scope": "deploy"}
                )
                assert made.status_code == 201, made.text
                tokens[owner] = made.json()["token"]
        with server.client(tokens["alice"]) as alice:
            _deploy(alice, NEIGHBOUR, model_path("ember", "image-out"), min_instances=1)
            made = _predict(alice, NEIGHBOUR, width=2)
            assert made["status"] == "succeeded", made
            # The only deployment so far: every worker, warm host and sandbox is Alice's.
            neighbour = _worker_processes(server)
            assert neighbour, "no worker process of alice/squares found under the server"
            uploaded = alice.post("/v1/files", files={"content": ("notes.txt", UPLOADED)})
            assert uploaded.status_code == 201, uploaded.text
        data_dir = Path(os.path.realpath(server.data_dir))
        [output] = (data_dir / "outputs" / made["id"]).iterdir()
        [source] = [
            path
            for path in (data_dir / "packages").glob("*/predict.py")
            if "image-out" in (path.parent / "ember.yaml").read_text()
        ]
        yield Site(
            server,
            tokens,
            sorted(neighbour),
            data_dir / "files" / uploaded.json()["id"],
            output,
            source,
        )


def _deploy(client: httpx.Client, deployment: str, package: Path, **settings: object) -> dict:
    """Model, version (returned) and deployment `deployment` ("owner/name"), as `client`."""
    owner, name = deployment.split("/")
    created = client.post("/v1/models", json={"owner": owner, "name": name})
    assert created.status_code == 201, created.text
    version = client.post(
        f"/v1/models/{owner}/{name}/versions",
        files={"package": ("p.tar.gz", package_archive(package))},
        timeout=300,
    )
    assert version.status_code == 201, version.text
    made = client.post("/v1/deployments", json={"name": name, "model": deployment, **settings})
    assert made.status_code == 201, made.text
    return version.json()


def _hostile(
    site: Site, package: str, name: str = "", folder: Path | None = None, **settings: object
) -> str:
    """Bob's deployment of tests/models/hostile/`package` (or of `folder`; named `name`, else
    after the package), made with `settings` the first time: its "owner/name"."""
    deployment = f"bob/{name or package}"
    if deployment not in site.deployed:
        with site.client("bob") as bob:
            _deploy(bob, deployment, folder or HOSTILE / package, **settings)
        site.deployed.add(deployment)
    return deployment


def _bob(site: Site, deployment: str, **inputs: object) -> dict:
    with site.client("bob") as bob:
        return _predict(bob, deployment, **inputs)


def _succeeded(site: Site, deployment: str, **inputs: object) -> str:
    """The output of a prediction of Bob's that must succeed."""
    result = _bob(site, deployment, **inputs)
    assert result["status"] == "succeeded", result
    return result["output"]


@contextlib.contextmanager
def _neighbour_keeps_answering(site: Site) -> Iterator[None]:
    """Alice's deployment answers predictions, one after another, all through the block,
    and the server its health check."""
    answers: list[str] = []
    stop = threading.Event()

    def ask() -> None:
        with site.client("alice") as alice:
            while True:
                try:
                    made = _predict(alice, NEIGHBOUR, width=1)
                    answers.append(made["status"] if made["status"] != "failed" else str(made))
                    health = alice.get("/health").status_code
                    if health != 200:
                        answers.append(f"health {health}")
                except Exception as exc:  # reported below, with the rest
                    answers.append(repr(exc))
                if stop.wait(0.2):
                    return

    asker = threading.Thread(target=ask, daemon=True)
    asker.start()
    try:
        yield
    finally:
        stop.set()
        asker.join(timeout=90)
    assert answers, "alice/squares never answered"
    assert set(answers) == {"succeeded"}, answers


# -- 1. the server's files ---------------------------------------------------------------


def test_a_replica_cannot_read_the_data_directory(site: Site) -> None:
    data_dir = site.data_dir
    files = [
        data_dir / "ember.db",
        data_dir / "secret.key",
        site.uploaded,
        site.output,
        site.package,
    ]
    folders = [data_dir, data_dir / "files", data_dir / "outputs", data_dir / "packages"]
    folders.append(data_dir / "scratch")  # every replica's scratch folder
    for path in files:  # all there, and readable to the server
        assert path.is_file() and path.read_bytes(), path
    with _neighbour_keeps_answering(site):
        output = _succeeded(
            site,
            _hostile(site, "read-host-files"),
            files=json.dumps([str(path) for path in files]),
            folders=json.dumps([str(path) for path in folders]),
        )
    found = json.loads(output)
    assert found["own_package"].startswith("read "), found  # it ran, and reads its own
    assert found["tmp"] == "mine", found
    for path, outcome in found["files"].items():
        assert outcome.startswith(("FileNotFoundError", "PermissionError")), (path, outcome)
    # A listing shows at most the skeleton the replica's own folders sit in.
    hidden = {"ember.db", "secret.key", "server.log", site.uploaded.name, site.output.parent.name}
    hidden.add(site.package.parent.name)
    for path, entries in found["folders"].items():
        if isinstance(entries, list):
            assert not hidden & set(entries), (path, entries)
    # Of the scratch folders, its own (or its warm host's, which holds its own) and no other
    # replica's, though the host has others (Alice's replica's, at least).
    scratches = data_dir / "scratch"
    own = Path(found["scratch"]).relative_to(scratches).parts[0]
    others = {entry.name for entry in scratches.iterdir()} - {own}
    assert others, "no other replica's scratch folder to hide"
    listed = found["folders"][str(scratches)]
    if isinstance(listed, list):
        assert set(listed) <= {own}, (listed, found["scratch"])
    assert UPLOADED.decode() not in output
    _succeeded(site, _hostile(site, "read-host-files"))


def test_a_replica_inherits_none_of_the_servers_secrets(site: Site) -> None:
    """The server's environment holds its admin token: not the replica's."""
    found = json.loads(_succeeded(site, _hostile(site, "read-host-files")))
    environment = found["environment"]
    assert "EMBER_ADMIN_TOKEN" not in environment, sorted(environment)
    assert hashlib.sha256(TOKEN.encode()).hexdigest() not in environment.values()


# -- 2. services on the host ---------------------------------------------------------------


def _host_address() -> str | None:
    """This machine's own address on its default route (not loopback), if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: only a route is chosen
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if address.startswith("127.") else address


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP port this test listens on, on every address of the host."""
    with socket.create_server(("0.0.0.0", 0)) as server:
        yield server.getsockname()[1]


def _offline(package: str, folder: Path) -> Path:
    """A copy of tests/models/hostile/`package` in `folder` that declares `network: none`."""
    copy = folder / package
    shutil.copytree(HOSTILE / package, copy)
    manifest = copy / "ember.yaml"
    manifest.write_text(manifest.read_text() + "network: none\n")
    return copy


@pytest.mark.parametrize("network", ["egress", "none"])
def test_a_replica_cannot_connect_to_services_on_the_host(
    site: Site, listener: int, network: str, tmp_path: Path
) -> None:
    targets = [
        "127.0.0.1:5432",  # PostgreSQL, where the test machine runs it
        f"127.0.0.1:{site.server.port}",  # Ember's own API
        f"127.0.0.1:{listener}",
    ]
    if address := _host_address():
        targets.append(f"{address}:{listener}")  # the host, by its own address
    reachable = []
    for target in targets:  # from the host itself, each one answers
        host, _, port = target.rpartition(":")
        with contextlib.suppress(OSError), socket.create_connection((host, int(port)), 2):
            reachable.append(target)
    assert f"127.0.0.1:{site.server.port}" in reachable and f"127.0.0.1:{listener}" in reachable
    with _neighbour_keeps_answering(site):
        hostile = (
            _hostile(site, "reach-host")
            if network == "egress"
            else _hostile(
                site, "reach-host", "reach-host-offline", _offline("reach-host", tmp_path)
            )
        )
        found = json.loads(_succeeded(site, hostile, targets=json.dumps(reachable)))
    assert set(found) == set(reachable)
    connected = [target for target, outcome in found.items() if outcome == "connected"]
    assert connected == [], found
    _succeeded(site, hostile, targets="[]")


# -- 3. other replicas ---------------------------------------------------------------------


def test_a_replica_cannot_kill_another_deployments_replica(site: Site) -> None:
    victims = [pid for pid in site.neighbour_processes if alive(pid)]
    assert victims, f"alice/squares' processes {site.neighbour_processes} already gone"
    with _neighbour_keeps_answering(site):
        found = json.loads(
            _succeeded(site, _hostile(site, "kill-neighbour"), pids=json.dumps(victims))
        )
        time.sleep(0.5)  # a SIGKILL that got through would have landed by now
    assert set(found) == {str(pid) for pid in victims}
    for pid, outcome in found.items():
        assert outcome.startswith("ProcessLookupError"), (pid, outcome)
    assert [pid for pid in victims if not alive(pid)] == []
    _succeeded(site, _hostile(site, "kill-neighbour"), pids="[]")


# -- 4. memory -----------------------------------------------------------------------------


def test_a_replica_past_its_memory_limit_is_stopped_alone(site: Site) -> None:
    hog = _hostile(site, "memory-hog")
    assert _succeeded(site, hog, mib=32) == "held 32 MiB"  # within its 256 MiB
    with _neighbour_keeps_answering(site):
        result = _bob(site, hog, mib=1024)
    assert result["status"] == "failed", result
    assert "out of memory: limit 256 MiB" in (result["error"] or ""), result
    # The deployment's status says why its replica ended.
    with site.client("bob") as bob:
        status = bob.get(f"/v1/deployments/{hog}").json()["status"]
    assert "out of memory: limit 256 MiB" in status["last_failure"]["reason"], status
    assert _succeeded(site, hog, mib=32) == "held 32 MiB"  # a new replica


# -- 5. processes --------------------------------------------------------------------------


def test_a_fork_bomb_stops_at_the_replicas_process_limit(site: Site) -> None:
    bomb = _hostile(site, "fork-bomb")
    _succeeded(site, bomb, bomb=False)  # its replica up before the bomb's seconds start
    results: list[dict] = []
    with _neighbour_keeps_answering(site), site.client("bob") as bob:
        exploding = threading.Thread(
            target=lambda: results.append(_predict(bob, bomb, seconds=5.0, max_forks=2000))
        )
        exploding.start()
        time.sleep(2.5)  # the bomb at its limit (or at 2000 children, unsandboxed)
        # Meanwhile the machine still starts processes (the neighbour's loop checks the rest).
        assert subprocess.run(["true"], timeout=30).returncode == 0
        exploding.join(timeout=90)
    [result] = results
    assert result["status"] == "succeeded", result
    found = json.loads(result["output"])
    assert found["forked"] < 2000, found
    assert found["error"] == "BlockingIOError" and found["errno"] == 11, found
    assert json.loads(_succeeded(site, bomb, bomb=False)) == {"forked": 0}


def _replicas(site: Site, deployment: str) -> dict:
    with site.client("bob") as bob:
        return bob.get(f"/v1/deployments/{deployment}").json()["status"]["replicas"]


def _wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def _daemons(site: Site) -> list[int]:
    """The hostile daemons this server's replicas started, known marker or not (the replica
    `ember deploy` starts to check setup() starts one too): by their command line, and the
    data directory in their environment (the scratch folder, TMPDIR, lies in it)."""
    data_dir = str(site.data_dir).encode()
    found = []
    for pid in _processes_with(" 987654."):
        with contextlib.suppress(OSError):
            if data_dir in Path(f"/proc/{pid}/environ").read_bytes():
                found.append(pid)
    return found


@pytest.mark.parametrize("tier", ["cold", "warm-host"])
def test_a_daemon_does_not_outlive_its_replica(site: Site, tier: str) -> None:
    """Spawned replicas (a sandbox each) and replicas forked from a warm host (in the host's
    sandbox, with cgroups of their own), whose setup() runs in the fork: either way the
    daemons setup() and predict() left end with the replica, though the host lives on."""
    daemon = _hostile(
        site,
        "daemon",
        f"daemon-{tier}",
        idle_timeout=1,  # time enough to see the daemons running before it scales to zero
        scale_down_delay=0,
        cold_start_tier=tier,
    )
    markers: list[str] = []
    try:
        with _neighbour_keeps_answering(site):
            for cycle in range(5):
                found = json.loads(_succeeded(site, daemon))
                started = [found["setup"], found["predict"]]
                markers += started
                for marker in started:  # the daemons run, and the host sees them
                    assert _processes_with(marker), (cycle, marker)
                _wait_for(
                    lambda: _replicas(site, daemon) == {"starting": 0, "ready": 0},
                    30,
                    f"{daemon} did not scale to zero (cycle {cycle})",
                )
                left = {m: pids for m in started if (pids := wait_gone(_processes_with(m)))}
                assert left == {}, f"cycle {cycle}: daemons outlived their replica: {left}"
            found = json.loads(_succeeded(site, daemon))  # and once more, then deleted
            markers += [found["setup"], found["predict"]]
            with site.client("bob") as bob:
                assert bob.delete(f"/v1/deployments/{daemon}").status_code == 204
        left = {m: pids for m in markers[-2:] if (pids := wait_gone(_processes_with(m)))}
        assert left == {}, f"daemons outlived their deleted deployment: {left}"
        assert wait_gone(_daemons(site)) == []
    finally:  # whatever the outcome, this test leaves no 11-day sleep on the machine
        for pid in {*_daemons(site), *(p for m in markers for p in _processes_with(m))}:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
