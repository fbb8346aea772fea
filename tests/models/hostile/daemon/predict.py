"""Leaves a daemon behind: setup() and each predict() double-fork, the middle process calls
setsid() (a session and process group of its own, so killing the replica's process group
misses it), and the grandchild, reparented away from the replica, execs a long sleep whose
command line carries a unique marker (`sleep 987654.<digits>`) by which a test finds it on
the host. predict() returns the markers of both.

Why it must not outlive its replica: a replica is a PID namespace and a cgroup; when the
replica stops (scaled to zero, deleted, crashed) the namespace's init dies and the kernel
kills every process left in it, and the cgroup lists every member however it left its parent,
so no daemon survives to hold memory, ports or a GPU with nobody's replica to account for it.
"""

import json
import os
import random
import shutil
import sys


def _marker() -> str:
    return f"987654.{random.SystemRandom().randrange(10**11, 10**12)}"


def _daemonize(marker: str) -> None:
    """Returns once the daemon runs its long sleep (so a test finds it by its marker)."""
    # os.pipe() is close-on-exec: the end the daemon keeps closes when it execs.
    started, running = os.pipe()
    child = os.fork()
    if child:
        os.close(running)
        os.read(started, 1)  # EOF: the daemon has exec'd (or died), the middle one exited
        os.close(started)
        os.waitpid(child, 0)
        return
    try:
        os.setsid()
        if os.fork():
            os._exit(0)
        os.chdir("/")
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        # Nothing of the replica's (its socket, its pipes) but the pipe that says it started.
        os.closerange(3, running)
        os.closerange(running + 1, 1 << 16)
        sleep = shutil.which("sleep")
        if sleep:
            os.execv(sleep, ["sleep", marker])
        os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(987654)", marker])
    finally:
        os._exit(127)


class Predictor:
    def setup(self) -> None:
        self.setup_marker = _marker()
        _daemonize(self.setup_marker)

    def predict(self, daemonize: bool = True) -> str:
        marker = _marker() if daemonize else None
        if marker:
            _daemonize(marker)
        return json.dumps({"setup": self.setup_marker, "predict": marker})
