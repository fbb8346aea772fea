"""The warm host: a process that has imported a package's predictor (the heavy imports: torch,
transformers...) and, where that is safe, run its `setup()`, then forks ready replicas on demand.

A replica forked from here skips the interpreter start, the imports and perhaps the setup: its
start costs a fork (milliseconds) instead of seconds (shared/docs/coldstart.md). The host never
runs a prediction itself, which keeps two fork hazards away: a parent that ran a parallel
OpenMP region deadlocks its children's first parallel op, and CUDA cannot cross a fork. So:

- The host computes with one thread (`OMP_NUM_THREADS=1` before anything is imported), so no
  OpenMP pool ever exists here; each child then sets its own thread count (the replica's
  `OMP_NUM_THREADS`, and torch's if loaded) and builds a fresh pool of its own.
- `setup()` runs here only when asked (`EMBER_HOST_SETUP=1`: the runtime asks for CPU-only
  packages that allow it) and only if it is synchronous; if it started threads (a connection
  pool, a native worker...) the host refuses to fork from that state and exits with
  `retry_without_setup`, and the runtime starts a host that only imports. Known harmless
  Python threads (tqdm's progress monitor, which HF loaders start) are not counted. Imports
  that start threads, or initialise CUDA, leave no safe state to fork from: the host then
  fails, and replicas start the ordinary way.
- Each child calls `setsid()` (its own process group, which the runtime kills as a whole),
  reseeds the random generators it inherited, and becomes an ordinary worker (`main.Worker`).

The host speaks to its runtime over a SOCK_SEQPACKET socket (EMBER_HOST_FD), one JSON message
per packet. Requests: `{"op": "fork", "replica", "tmpdir", "env"}` carrying two descriptors (the
replica's worker socket and its stderr pipe), `{"op": "retire"}` (fork no more; exit when the
last child has). Events: `ready`, `failed`, `forked`, `fork_failed`, `exit` {pid, code}. The host
reaps its children, so it reports their exit codes. If the runtime goes away, it kills its
children and exits. SIGTERM (a spot machine shutting down signals every process) retires it:
dying at once would orphan its replicas, which the runtime then kills, while they are draining
the predictions they run (each forked worker handles its own SIGTERM).
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import random
import selectors
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from ember.packages.loader import load_predictor
from ember.packages.predictor import Predictor
from ember.packages.spec import PackageSpec
from ember.worker import egress_relay
from ember.worker.main import Preloaded, Worker

MAX_PACKET = 64 * 1024
# Python threads that hold nothing a child could need: a fork may leave them behind.
HARMLESS_THREADS = frozenset({"tqdm_monitor"})


def thread_count() -> int:
    """OS threads of this process, native ones included (what a fork leaves behind), less the
    known harmless Python threads."""
    harmless = sum(1 for t in threading.enumerate() if t.name in HARMLESS_THREADS)
    try:
        return len(os.listdir("/proc/self/task")) - harmless
    except OSError:  # no procfs: count what Python knows of
        return threading.active_count() - harmless


def child_processes() -> list[int]:
    """The processes whose parent is this one (what an import or setup() started)."""
    me = os.getpid()
    children = []
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:
                continue
            # pid (comm) state ppid ...: comm may hold spaces and parentheses
            if int(stat.rsplit(")", 1)[1].split()[1]) == me:
                children.append(int(entry.name))
    return children


class Host:
    def __init__(
        self, sock: socket.socket, spec: PackageSpec, outputs_dir: Path, run_setup: bool
    ) -> None:
        self.sock = sock
        self.spec = spec
        self.outputs_dir = outputs_dir
        self.run_setup = run_setup
        self.children: set[int] = set()
        self.retiring = False
        self.predictor: Predictor | None = None
        self.setup_done = False
        self.replica_threads: str | None = None

    def send(self, message: dict[str, Any]) -> None:
        self.sock.sendall(json.dumps(message).encode())

    # -- preparing ----------------------------------------------------------------------

    def prepare(self) -> bool:
        """Import the predictor and perhaps set it up; report `ready` or `failed`."""
        os.chdir(self.spec.root)
        os.environ.update(self.spec.environment)
        self.replica_threads = os.environ.get("OMP_NUM_THREADS")
        os.environ["OMP_NUM_THREADS"] = "1"  # read once, when the OpenMP runtime loads
        # torch.cuda.is_available() through NVML, which does not initialise CUDA here.
        os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
        threads = thread_count()
        began = time.perf_counter()
        try:
            self.predictor = load_predictor(self.spec)
        except BaseException:
            self.send({"ev": "failed", "error": traceback.format_exc()})
            return False
        timings = {"load": round(time.perf_counter() - began, 6)}
        if unsafe := fork_hazard(threads):
            self.send({"ev": "failed", "error": f"importing the predictor {unsafe}"})
            return False
        note = None
        if self.run_setup:
            began = time.perf_counter()
            try:
                result = self.predictor.setup()
            except BaseException:
                self.send({"ev": "failed", "error": traceback.format_exc()})
                return False
            if inspect.isawaitable(result):
                # Its event loop would not survive the fork: each replica runs it instead.
                if inspect.iscoroutine(result):
                    result.close()
                note = "setup() is async, so each replica runs it after the fork"
            elif unsafe := fork_hazard(threads):
                self.send(
                    {
                        "ev": "failed",
                        "retry_without_setup": True,
                        "error": f"setup() {unsafe}; replicas will run setup() themselves",
                    }
                )
                return False
            else:
                self.setup_done = True
                timings["setup"] = round(time.perf_counter() - began, 6)
        self.send(
            {
                "ev": "ready",
                "pid": os.getpid(),
                "setup_done": self.setup_done,
                "note": note,
                "timings": timings,
            }
        )
        return True

    # -- serving forks ------------------------------------------------------------------

    def serve(self) -> int:
        wake_read, wake_write = os.pipe()
        os.set_blocking(wake_write, False)
        signal.set_wakeup_fd(wake_write)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # only wakes the selector
        signal.signal(signal.SIGTERM, self._retire)  # (and wakes the selector too)
        selector = selectors.DefaultSelector()
        selector.register(self.sock, selectors.EVENT_READ, "control")
        selector.register(wake_read, selectors.EVENT_READ, "child")
        self._private_fds = (wake_read, wake_write)
        self._selector = selector
        while not (self.retiring and not self.children):
            for key, _ in selector.select():
                if key.data == "child":
                    os.read(wake_read, 4096)
                    self._reap()
                elif not self._on_control():
                    self._kill_children()
                    return 0
            self._reap()  # a SIGCHLD may have coalesced with another wake-up
        return 0

    def _retire(self, signum: int, frame: Any) -> None:
        """SIGTERM: fork no more, and exit once the replicas forked so far have."""
        self.retiring = True

    def _on_control(self) -> bool:
        """Handle one request; False when the runtime has gone away."""
        try:
            data, fds, _, _ = socket.recv_fds(self.sock, MAX_PACKET, 3)
        except OSError:
            return False
        if not data:
            return False
        message = json.loads(data)
        if message.get("op") == "fork" and len(fds) in (2, 3) and not self.retiring:
            self._fork(message, *fds)
            return True
        for fd in fds:
            os.close(fd)
        if message.get("op") == "retire":
            self.retiring = True
        elif message.get("op") == "fork":
            self.send(
                {"ev": "fork_failed", "replica": message.get("replica"), "error": "host retiring"}
            )
        return True

    def _fork(
        self, message: dict[str, Any], worker_fd: int, stderr_fd: int, hold_fd: int = -1
    ) -> None:
        """Fork a replica. With `hold_fd` (a sandboxed host's), the child waits until the
        runtime closes that pipe's other end, which it does once it has moved the child into
        cgroups of the replica's own: whatever the child starts from then on (setup() may
        daemonize a helper) is counted, limited and ended with the replica, not the host."""
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            pid = os.fork()
        except OSError as exc:
            os.close(worker_fd)
            os.close(stderr_fd)
            if hold_fd >= 0:
                os.close(hold_fd)
            self.send({"ev": "fork_failed", "replica": message["replica"], "error": str(exc)})
            return
        if pid == 0:
            code = 1
            try:
                if hold_fd >= 0:
                    os.read(hold_fd, 1)  # EOF: moved (or the runtime is gone)
                    os.close(hold_fd)
                code = self._become_worker(message, worker_fd, stderr_fd)
            except BaseException:
                with contextlib.suppress(BaseException):
                    traceback.print_exc()
            finally:
                with contextlib.suppress(BaseException):
                    sys.stdout.flush()
                    sys.stderr.flush()
                os._exit(code)  # never back into the host's loop
        os.close(worker_fd)
        os.close(stderr_fd)
        if hold_fd >= 0:
            os.close(hold_fd)
        self.children.add(pid)
        self.send({"ev": "forked", "replica": message["replica"], "pid": pid})

    def _become_worker(self, message: dict[str, Any], worker_fd: int, stderr_fd: int) -> int:
        """In the child: shed the host's plumbing and run an ordinary worker."""
        os.setsid()
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        # Not the host's retire-on-SIGTERM: until the worker installs its drain, a SIGTERM
        # (preemption) ends it rather than being lost.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        self._selector.close()
        self.sock.close()
        for fd in self._private_fds:
            os.close(fd)
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(devnull, 1)
        os.dup2(stderr_fd, 2)
        os.close(devnull)
        os.close(stderr_fd)
        os.environ["TMPDIR"] = message["tmpdir"]
        os.environ.update(message.get("env") or {})  # e.g. CUDA_VISIBLE_DEVICES, before setup
        tempfile.tempdir = None  # recomputed from TMPDIR on next use
        restore_threads(self.replica_threads)
        reseed_after_fork()
        assert self.predictor is not None
        worker = Worker(socket.socket(fileno=worker_fd), self.spec, self.outputs_dir)
        return worker.run(Preloaded(self.predictor, self.setup_done))

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            if pid == 0:
                return
            self.children.discard(pid)
            # If the runtime is gone, the loop notices on its next read.
            with contextlib.suppress(OSError):
                self.send({"ev": "exit", "pid": pid, "code": os.waitstatus_to_exitcode(status)})

    def _kill_children(self) -> None:
        for pid in self.children:
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)


def fork_hazard(threads_before: int) -> str | None:
    """Why forking from this process now could break its children, or None: threads started
    since `threads_before` (their locks and pools do not survive a fork), processes started
    (a replica cannot wait for a process its parent started), or CUDA initialised (it cannot
    cross a fork at all). The host forks no replica before this is asked."""
    started = thread_count() - threads_before
    if started > 0:
        return f"started {started} thread(s) (a pool of some kind): forking could deadlock"
    if children := child_processes():
        return (
            f"started {len(children)} process(es): they would be the warm host's children, "
            "not the replicas' (whose Popen.poll() would call them ended)"
        )
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        return "initialised CUDA, which cannot cross a fork"
    return None


def restore_threads(replica_threads: str | None) -> None:
    """Give the child the compute threads a spawned replica would have had: the host ran with
    one, so the child's OpenMP pool is created fresh, here, on its first parallel op."""
    if replica_threads is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = replica_threads
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(int(replica_threads or os.cpu_count() or 1))


def reseed_after_fork() -> None:
    """Replicas forked from one host would otherwise draw the same "random" numbers.
    (Python's `random` reseeds itself at fork; NumPy's and torch's global generators do not.)"""
    random.seed()
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.seed()


def main() -> int:
    egress_relay.start()  # for the replicas it forks too: they share its network
    sock = socket.socket(fileno=int(os.environ["EMBER_HOST_FD"]))
    spec = PackageSpec.model_validate_json(os.environ["EMBER_PACKAGE_SPEC"])
    host = Host(
        sock,
        spec,
        Path(os.environ["EMBER_OUTPUTS_DIR"]),
        run_setup=os.environ.get("EMBER_HOST_SETUP") == "1",
    )
    if not host.prepare():
        return 1
    return host.serve()


if __name__ == "__main__":
    sys.exit(main())
