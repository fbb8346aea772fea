"""Control groups for replicas: the memory, CPU and process limits a package declares, made
real by the kernel, and the one list of every process a replica started.

Why cgroups and not rlimits: an rlimit binds one process (a model forks helpers, each with
its own), while a cgroup binds the replica and everything it starts, counts what the page
cache and tmpfs hold for it, and lists every member however it left its parent (a double fork
into a new session included) so that ending a replica can end all of it.

Both kernel interfaces are handled: v1 (one hierarchy per controller: memory, pids and cpu
each mounted at /sys/fs/cgroup/<name>, as on this project's machines) and v2 (one unified
hierarchy), where Ember uses a subtree delegated to it with those controllers enabled. Ember's
groups live under `ember-<id>`, one per data directory, so that a restarted server finds and
ends what a crash of its predecessor left running, and two servers never touch each other's.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
CONTROLLERS = ("memory", "pids", "cpu")
CPU_PERIOD_US = 100_000
# Enough for a model's threads (torch and llama.cpp start one per core) and a few helper
# processes; a fork bomb stops here instead of at the machine's limit.
DEFAULT_PIDS_MAX = 1024


class CgroupUnavailable(Exception):
    """The cgroup controllers Ember needs cannot be used here; the message says which."""


@dataclass(frozen=True)
class Limits:
    """What one replica may use: bytes of memory, CPU cores (a quota, may be fractional),
    and processes plus threads."""

    memory: int
    cpu: float
    pids: int = DEFAULT_PIDS_MAX


def _own_paths() -> dict[str, str]:
    """This process's cgroup path per v1 controller ("" for the v2 hierarchy)."""
    paths: dict[str, str] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, names, path = line.split(":", 2)
        for name in names.split(",") if names else [""]:
            paths[name] = path
    return paths


class Cgroup:
    """One group, present in each controller's hierarchy (v1) or once (v2)."""

    def __init__(self, folders: dict[str, Path], version: int) -> None:
        self.folders = folders  # controller -> folder (v2: one folder under every name)
        self.version = version

    @property
    def _procs_folder(self) -> Path:
        return self.folders["pids"]

    def create(self, limits: Limits | None) -> None:
        for folder in set(self.folders.values()):
            folder.mkdir(exist_ok=True)
        if limits is not None:
            self.limit(limits)

    def limit(self, limits: Limits) -> None:
        cpu_quota = max(1000, int(limits.cpu * CPU_PERIOD_US))
        if self.version == 1:
            memory = self.folders["memory"]
            _write(memory / "memory.limit_in_bytes", str(limits.memory))
            # Where swap is accounted, the same bound on memory plus swap: no escape into it.
            with contextlib.suppress(FileNotFoundError):
                _write(memory / "memory.memsw.limit_in_bytes", str(limits.memory))
            _write(self.folders["pids"] / "pids.max", str(limits.pids))
            _write(self.folders["cpu"] / "cpu.cfs_period_us", str(CPU_PERIOD_US))
            _write(self.folders["cpu"] / "cpu.cfs_quota_us", str(cpu_quota))
        else:
            folder = self.folders["memory"]
            _write(folder / "memory.max", str(limits.memory))
            with contextlib.suppress(FileNotFoundError):
                _write(folder / "memory.swap.max", "0")
            _write(folder / "pids.max", str(limits.pids))
            _write(folder / "cpu.max", f"{cpu_quota} {CPU_PERIOD_US}")

    def add(self, pid: int) -> None:
        """Move a process (all its threads) into the group; its future children follow."""
        for folder in set(self.folders.values()):
            _write(folder / "cgroup.procs", str(pid))

    def pids(self) -> list[int]:
        try:
            text = (self._procs_folder / "cgroup.procs").read_text()
        except OSError as exc:  # removed, or being removed (ENODEV) by another thread
            if exc.errno in (errno.ENOENT, errno.ENODEV):
                return []
            raise
        return [int(line) for line in text.split()]

    def oom_killed(self) -> bool:
        """Whether the kernel killed a member for passing the memory limit."""
        name = "memory.oom_control" if self.version == 1 else "memory.events"
        try:
            text = (self.folders["memory"] / name).read_text()
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENODEV):
                return False
            raise
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and int(value) > 0:
                return True
        return False

    def kill_all(self, settle: float = 2.0) -> None:
        """SIGKILL every member until none is left: a process forking as fast as it can
        adds members while the list is read, so read and kill again (the pids limit bounds
        how many there can be). The v1 freezer is not used; it is not mounted everywhere."""
        deadline = time.monotonic() + settle
        while pids := self.pids():
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if time.monotonic() > deadline:
                break
            time.sleep(0.001)

    def remove(self, attempts: int = 200) -> None:
        """Remove the group once empty (a killed process leaves it when it is reaped)."""
        for folder in set(self.folders.values()):
            for _ in range(attempts):
                try:
                    folder.rmdir()
                    break
                except (FileNotFoundError, ProcessLookupError):
                    break
                except OSError as exc:
                    if exc.errno == errno.ENODEV:  # removed meanwhile by another thread
                        break
                    if exc.errno != errno.EBUSY:
                        raise
                    time.sleep(0.005)

    def children(self) -> list[str]:
        folder = self._procs_folder
        if not folder.is_dir():
            return []
        return sorted(entry.name for entry in folder.iterdir() if entry.is_dir())


def _write(path: Path, value: str) -> None:
    with open(path, "w") as handle:
        handle.write(value)


def _alive(instance: str) -> bool:
    """Whether the server that named its groups `<pid>-<start time>` still runs."""
    pid, _, started = instance.partition("-")
    try:
        return process_start_time(int(pid)) == started
    except (ValueError, OSError):
        return False


def process_start_time(pid: int) -> str:
    """A process's start time in clock ticks since boot: with its pid, a name no later process
    can take."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[19]


class CgroupTree:
    """Ember's groups: `ember-<id>/<server>/<replica or host>`, `<server>` naming the running
    server by pid and start time, so a later server can tell its predecessor's strays from a
    neighbour's live groups (`ember run` beside `ember serve` on one data directory)."""

    def __init__(self, version: int, bases: dict[str, Path]) -> None:
        self.version = version
        self.bases = bases  # controller -> this tree's folder

    @classmethod
    def discover(cls, name: str) -> CgroupTree:
        """The tree of this server under `name` (below this process's own groups); raises
        CgroupUnavailable saying what is missing."""
        if (CGROUP_ROOT / "cgroup.controllers").exists():
            return cls._discover_v2(name)
        own = _own_paths()
        bases: dict[str, Path] = {}
        missing = []
        for controller in CONTROLLERS:
            mount = CGROUP_ROOT / controller
            if controller not in own or not (mount / "cgroup.procs").exists():
                missing.append(controller)
                continue
            bases[controller] = mount / own[controller].lstrip("/") / name
        if missing:
            raise CgroupUnavailable(
                f"cgroup v1 controllers not mounted: {', '.join(missing)} "
                f"(looked under {CGROUP_ROOT})"
            )
        return cls(1, bases)

    @classmethod
    def _discover_v2(cls, name: str) -> CgroupTree:
        own = _own_paths().get("", "/")
        folder = CGROUP_ROOT / own.lstrip("/")
        enabled = set((folder / "cgroup.subtree_control").read_text().split())
        missing = [c for c in CONTROLLERS if c not in enabled]
        if missing:
            raise CgroupUnavailable(
                f"cgroup v2 controllers not delegated to {folder}: {', '.join(missing)} "
                "(run Ember in a cgroup whose cgroup.subtree_control enables memory, pids and "
                "cpu, e.g. a systemd unit with Delegate=yes)"
            )
        return cls(2, dict.fromkeys(CONTROLLERS, folder / name))

    def subtree(self, name: str) -> CgroupTree:
        """The tree one level down (created), e.g. this server's own."""
        tree = CgroupTree(self.version, {c: base / name for c, base in self.bases.items()})
        tree.make()
        return tree

    def make(self) -> None:
        for base in set(self.bases.values()):
            try:
                base.mkdir(parents=True, exist_ok=True)
                if self.version == 2:
                    _write(base / "cgroup.subtree_control", "+memory +pids +cpu")
            except OSError as exc:
                raise CgroupUnavailable(f"cannot create cgroups in {base.parent}: {exc}") from exc

    def group(self, name: str) -> Cgroup:
        return Cgroup({c: base / name for c, base in self.bases.items()}, self.version)

    def sweep_strays(self) -> int:
        """End the groups of servers of this data directory that are gone (a crash leaves
        them, with whatever ran in them); returns how many processes it killed."""
        killed = 0
        for instance in Cgroup(dict(self.bases), self.version).children():
            if _alive(instance):
                continue
            tree = CgroupTree(self.version, {c: b / instance for c, b in self.bases.items()})
            for name in Cgroup(dict(tree.bases), self.version).children():
                stray = tree.group(name)
                killed += len(stray.pids())
                stray.kill_all()
                with contextlib.suppress(OSError):
                    stray.remove()
            with contextlib.suppress(OSError):
                Cgroup(dict(tree.bases), self.version).remove()
        return killed

    def probe(self) -> None:
        """Create a group with limits and remove it: proves the controllers are writable."""
        group = self.group(f"probe-{os.getpid()}")
        try:
            group.create(Limits(memory=2**30, cpu=1.0, pids=16))
        except OSError as exc:
            raise CgroupUnavailable(f"cannot set cgroup limits: {exc}") from exc
        finally:
            with contextlib.suppress(OSError):
                group.remove()
