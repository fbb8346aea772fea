"""Sandboxes for replicas and warm hosts: set up once per server (`Sandboxing`), one per
process tree (`Confinement`).

A spawned replica or a warm host starts as `sh -c 'echo $$ > <its cgroups>; exec bwrap …
python -m …'`: it joins its cgroups before bubblewrap builds its namespaces, so everything it
will ever start is counted and can be ended. A replica forked from a warm host is born in the
host's sandbox (same view, same network, its PID namespace) and is then moved into cgroups of
its own, so each replica has its own memory limit and its own list of processes.

Why a shell and not `preexec_fn`: the server runs threads, and Python documents `preexec_fn`
as unsafe with threads (the child may deadlock on a lock held at fork time); `sh` costs about
a millisecond.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import shutil
import subprocess
import time
import urllib.parse
from pathlib import Path
from typing import Protocol

import ember
from ember.egress import EgressPolicy
from ember.packages.environment import Environment
from ember.packages.spec import PackageSpec
from ember.runtime.sandbox.cgroups import (
    Cgroup,
    CgroupTree,
    CgroupUnavailable,
    Limits,
    process_start_time,
)
from ember.runtime.sandbox.egress_proxy import EgressProxy
from ember.runtime.sandbox.layout import Layout, bwrap_arguments, confined_environment

logger = logging.getLogger("ember.runtime")

SANDBOX_ENV = "EMBER_SANDBOX"
# Ember's public URL, exported by the server: a `network: none` sandbox reaches it alone.
PUBLIC_URL_ENV = "EMBER_PUBLIC_URL"
# Inside bubblewrap's PID namespace its own init is 1 and the command it starts is 2.
COMMAND_PID_INSIDE = 2
_JOIN_CGROUPS = 'n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 125; shift; n=$((n-1)); done; exec "$@"'  # noqa: E501


class _Exits(Protocol):
    returncode: int | None


class SandboxUnavailable(Exception):
    """The sandbox cannot be set up on this machine; the message says what is missing and
    what to do."""


def sandbox_wanted(environ: dict[str, str] | None = None) -> bool:
    """EMBER_SANDBOX: on (the default) or off."""
    value = (environ if environ is not None else os.environ).get(SANDBOX_ENV, "on").lower()
    if value in ("on", "1", "true", "yes", ""):
        return True
    if value in ("off", "0", "false", "no"):
        return False
    raise ValueError(f"{SANDBOX_ENV} must be on or off, not {value!r}")


def format_bytes(size: int) -> str:
    """8 GiB, 256 MiB, 1.5 GiB: how a memory limit reads in an error."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:.4g} {unit}"
    return f"{size} bytes"


def _ns_pids(pid: int) -> list[int]:
    """A process's pid in each PID namespace it is in, outermost first."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("NSpid:"):
                return [int(value) for value in line.split()[1:]]
    return []


class Confinement:
    """One sandbox's cgroup and view: what is needed to start a process in it, find the
    process, and end everything in it."""

    def __init__(
        self,
        sandboxing: Sandboxing,
        name: str,
        limits: Limits,
        scratch: Path,
        layout: Layout | None,
    ) -> None:
        self.sandboxing = sandboxing
        self.name = name
        self.limits = limits
        self.scratch = scratch
        self.layout = layout  # None: a fork, inside its host's sandbox
        self.group = sandboxing.tree.group(name)
        self.group.create(limits)

    @property
    def outputs(self) -> Path:
        """Where a worker writes output files; the runtime moves them out to be served."""
        return self.scratch / ".ember-outputs"

    def command(self, argv: list[str]) -> list[str]:
        assert self.layout is not None
        procs = sorted({str(folder / "cgroup.procs") for folder in self.group.folders.values()})
        return [
            "/bin/sh",
            "-c",
            _JOIN_CGROUPS,
            "sh",
            str(len(procs)),
            *procs,
            self.sandboxing.bwrap,
            *bwrap_arguments(self.layout),
            "--",
            *argv,
        ]

    def environment(self, env: dict[str, str]) -> dict[str, str]:
        assert self.layout is not None
        return confined_environment(env, self.layout)

    def find(self, inner_pid: int) -> int | None:
        """The pid outside of the member that is `inner_pid` in its own namespace."""
        for pid in self.group.pids():
            ns_pids = _ns_pids(pid)
            if len(ns_pids) > 1 and ns_pids[-1] == inner_pid:
                return pid
        return None

    async def wait_for(self, started: _Exits, timeout: float = 10.0) -> int | None:
        """The outside pid of the sandbox's command once bubblewrap has started it, or None if
        bubblewrap (`started`) exited first (its exit code and stderr then tell why)."""
        deadline = time.monotonic() + timeout
        while (pid := self.find(COMMAND_PID_INSIDE)) is None:
            if started.returncode is not None:
                return None
            if time.monotonic() > deadline:
                raise OSError(f"the sandbox {self.name} did not start its command")
            await asyncio.sleep(0.0005)
        return pid

    def adopt(self, name: str, outer_pid: int, scratch: Path) -> Confinement:
        """A confinement of its own for a process forked in this sandbox."""
        child = Confinement(self.sandboxing, name, self.limits, scratch, None)
        with contextlib.suppress(ProcessLookupError):  # already gone: its exit tells the rest
            child.group.add(outer_pid)
        return child

    def out_of_memory(self) -> str | None:
        """ "out of memory: limit 8 GiB" if the kernel killed a member at the limit."""
        if self.group.oom_killed():
            return f"out of memory: limit {format_bytes(self.limits.memory)}"
        return None

    def kill_all(self) -> None:
        self.group.kill_all()

    def close(self) -> None:
        """End every process in the sandbox and remove its groups."""
        self.end_group(self.group)

    @staticmethod
    def end_group(group: Cgroup) -> None:
        group.kill_all()
        try:
            group.remove()
        except OSError:
            logger.warning("could not remove the cgroup %s", group.folders, exc_info=True)


class Sandboxing:
    """This server's sandboxes: checked at start, named after the data directory, with what
    a crash of a predecessor left behind ended."""

    def __init__(self, data_dir: Path, enabled: bool) -> None:
        self.enabled = enabled
        self.strays_ended = 0
        self.bwrap = ""
        self._proxies: dict[str, EgressProxy] = {}  # by network setting
        if not enabled:
            self.detail = (
                "off (--no-sandbox or EMBER_SANDBOX=off): replicas run as the server's user "
                "and see what it sees"
            )
            return
        problems: list[str] = []
        version = self._check_bubblewrap(problems)
        tree_name = "ember-" + hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:12]
        try:
            root = CgroupTree.discover(tree_name)
            root.make()
            root.probe()
            self.strays_ended = root.sweep_strays()
            me = os.getpid()
            self.root = root
            self.tree = root.subtree(f"{me}-{process_start_time(me)}")
        except (CgroupUnavailable, OSError) as exc:
            problems.append(str(exc))
        if problems:
            raise SandboxUnavailable(
                "replicas cannot be sandboxed on this machine:\n"
                + "".join(f"  - {problem}\n" for problem in problems)
                + "Install bubblewrap (`sudo apt-get install bubblewrap`) and run Ember as root "
                "or in a cgroup delegated to it; or start it with --no-sandbox "
                "(EMBER_SANDBOX=off) to run every model with the server's own rights."
            )
        if self.strays_ended:
            logger.warning(
                "ended %d processes left running by an earlier server of this data directory",
                self.strays_ended,
            )
        self.detail = f"on ({version}, cgroup v{self.tree.version}: memory, pids, cpu)"

    def close(self) -> None:
        """Remove this server's groups, ending what is left in them (its hosts and replicas
        have ended their own by now), and the data directory's tree once no server uses it."""
        if not self.enabled:
            return
        for name in Cgroup(dict(self.tree.bases), self.tree.version).children():
            Confinement.end_group(self.tree.group(name))
        for tree in (self.tree, self.root):
            with contextlib.suppress(OSError):
                Cgroup(dict(tree.bases), tree.version).remove(attempts=1)

    def _check_bubblewrap(self, problems: list[str]) -> str:
        found = shutil.which("bwrap")
        if found is None:
            problems.append("bubblewrap (bwrap) is not installed")
            return ""
        self.bwrap = found
        trial = Layout(read_only=(), scratch=Path("/"))
        try:
            result = subprocess.run(
                [found, *bwrap_arguments(trial), "--", "/bin/true"],
                capture_output=True,
                text=True,
                timeout=30,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            problems.append(f"bubblewrap cannot run: {exc}")
            return ""
        if result.returncode != 0:
            problems.append(
                "bubblewrap cannot create namespaces here (are user namespaces disabled?): "
                + result.stderr.strip()
            )
        version = subprocess.run([found, "--version"], capture_output=True, text=True)
        return version.stdout.strip() or "bubblewrap"

    async def _proxy(self, network: str) -> EgressProxy:
        """The egress proxy for sandboxes with `network` (started on first use)."""
        proxy = self._proxies.get(network)
        if proxy is None:
            only = None
            if network == "none":  # Ember's own files alone (or nothing, without a server)
                public = urllib.parse.urlsplit(os.environ.get(PUBLIC_URL_ENV, ""))
                default = 443 if public.scheme == "https" else 80
                only = ((public.hostname or "").lower(), public.port or default)
            proxy = EgressProxy(EgressPolicy.from_env(), only)
            await proxy.start()
            self._proxies[network] = proxy
        return proxy

    async def close_proxies(self) -> None:
        proxies, self._proxies = list(self._proxies.values()), {}
        for proxy in proxies:
            await proxy.close()

    async def confine(
        self,
        name: str,
        spec: PackageSpec,
        environment: Environment,
        scratch: Path,
        env: dict[str, str],
    ) -> Confinement:
        """A sandbox for a warm host or spawned replica of `spec` (its cgroups created now)."""
        scratch.mkdir(parents=True, exist_ok=True)
        gpus: tuple[str, ...] = ()
        if spec.resources.gpu is not None:
            visible = env.get("CUDA_VISIBLE_DEVICES", "")
            gpus = tuple(index for index in visible.split(",") if index.strip().isdigit())
        proxy = await self._proxy(spec.network)
        layout = Layout(
            read_only=tuple(self._readable(spec, environment)),
            scratch=scratch,
            gpus=gpus,
            egress_socket=proxy.path,
        )
        limits = Limits(memory=spec.resources.memory, cpu=spec.resources.cpu)
        return Confinement(self, name, limits, scratch, layout)

    @staticmethod
    def _readable(spec: PackageSpec, environment: Environment) -> list[Path]:
        """The package, its environment with the interpreter it was made from, and Ember's
        own package (the worker), each read-only."""
        paths = {Path(spec.root), Path(ember.__file__).resolve().parent}
        venv = environment.python.parent.parent
        paths.add(venv)
        with contextlib.suppress(OSError):
            for line in (venv / "pyvenv.cfg").read_text().splitlines():
                key, _, value = line.partition("=")
                if key.strip() == "home":
                    paths.add(Path(value.strip()).resolve().parent)
        if spec.engine is not None and spec.engine.model:
            model = Path(spec.engine.model)
            if model.is_absolute() and model.exists():
                paths.add(model)
        return sorted(path for path in paths if path.exists())
