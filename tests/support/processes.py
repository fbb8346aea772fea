"""What runs under a server, read from /proc: children, liveness and command lines, for the
tests that a stopped or crashed replica leaves nothing behind."""

from __future__ import annotations

import os
import time
from pathlib import Path


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


def _pid_namespace(pid: int | str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def outside_pid(inner: int, beside: int) -> int:
    """The pid, as this process sees it, of the process that calls itself `inner` in the PID
    namespace of process `beside` (a sandboxed replica's worker): a model can only report the
    pid its sandbox shows it. Unsandboxed, the two are the same."""
    return outside_pid_in(inner, _pid_namespace(beside))


def reported_pid(reported: str) -> int:
    """The pid here of a model that reported itself as `<pid>@<its PID namespace>` (as the
    test models do: `os.readlink("/proc/self/ns/pid")` names the same namespace inside a
    sandbox and out)."""
    pid, _, namespace = reported.partition("@")
    return outside_pid_in(int(pid), namespace or None)


def outside_pid_in(inner: int, namespace: str | None) -> int:
    if namespace is None or namespace == _pid_namespace("self"):
        return inner
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or _pid_namespace(entry.name) != namespace:
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("NSpid:") and int(line.split()[-1]) == inner:
                return int(entry.name)
    raise LookupError(f"no process {inner} in the PID namespace {namespace}")
