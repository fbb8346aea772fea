"""The runtime's side of a warm host (`ember.worker.host`): start it, fork replicas from it,
learn their exit codes from it, retire it.

A forked replica is the host's child, not ours, so the host reaps it and reports its exit code;
`ForkedProcess` turns those reports into the little of `asyncio.subprocess.Process` that a
`LocalReplica` uses (pid, returncode, wait). If the host itself dies, its replicas lose their
reaper: we kill their process groups and report them killed, so nothing runs unaccounted for.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
from pathlib import Path
from typing import Any

from ember.packages.environment import Environment
from ember.packages.spec import PackageSpec
from ember.runtime.processes import start_module
from ember.runtime.sandbox import Confinement

logger = logging.getLogger("ember.runtime")

_LOG_LIMIT = 64 * 1024
_PACKET = 64 * 1024


class _PipeReader(asyncio.StreamReaderProtocol):
    """Reads a replica's stderr pipe. A pipe has no half-close: at its end the transport must
    close, which uvloop (the server's loop) does only when eof_received() returns False;
    otherwise each forked replica would leave an fd open for as long as its object lives."""

    def eof_received(self) -> bool:
        super().eof_received()
        return False


class HostUnavailable(Exception):
    """The warm host cannot fork now (not ready, retiring, or gone)."""


class ForkedProcess:
    """A replica process forked by a warm host."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self.release = -1  # sandboxed: the pipe end whose closing lets it start (`release`)
        self._exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def exited(self, code: int) -> None:
        if not self._exited.done():
            self.returncode = code
            self._exited.set_result(code)

    async def wait(self) -> int:
        return await asyncio.shield(self._exited)

    def start(self) -> None:
        """Let a forked replica that waits (sandboxed: until moved to its cgroups) go on."""
        if self.release >= 0:
            os.close(self.release)
            self.release = -1


class WarmHost:
    """One pre-initialised process for one package, forking replicas on request."""

    def __init__(
        self,
        spec: PackageSpec,
        environment: Environment,
        outputs_dir: Path,
        worker_env: dict[str, str],
        run_setup: bool,
        confinement: Confinement | None = None,
    ) -> None:
        self.spec = spec
        # Its sandbox, which its forks share until each is moved to cgroups of its own.
        self.confinement = confinement
        self.environment = environment
        self.outputs_dir = outputs_dir
        self.worker_env = worker_env
        self.run_setup = run_setup
        self.state = "starting"  # starting | ready | failed | stopped
        self.setup_done = False
        self.ever_ready = False
        self.note: str | None = None
        self.error: str | None = None
        self.retry_without_setup = False
        self.timings: dict[str, float] = {}
        self.pid: int | None = None
        self.log = bytearray()
        self._process: asyncio.subprocess.Process | None = None
        self._sock: socket.socket | None = None
        self._children: dict[int, ForkedProcess] = {}
        self._forks: dict[str, asyncio.Future[ForkedProcess]] = {}
        self._abandoned: set[str] = set()  # forks whose requester gave up waiting
        self._ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    async def start(self) -> None:
        """Launch the host; returns at once (`wait_ready` waits for its imports and setup)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = dict(self.worker_env)
        env.update(
            EMBER_HOST_FD=str(theirs.fileno()),
            EMBER_HOST_SETUP="1" if self.run_setup else "0",
        )
        try:
            self._process = await start_module(
                self.environment,
                "ember.worker.host",
                theirs.fileno(),
                env,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                confinement=self.confinement,
            )
            # Sandboxed, the process we started is bubblewrap; the host is its command.
            inside = (
                await self.confinement.wait_for(self._process)
                if self.confinement is not None
                else None
            )
            self.pid = inside or self._process.pid
        except OSError as exc:  # no process (out of fds or processes, no interpreter)
            ours.close()
            self.state, self.error = "failed", f"the warm host could not be started: {exc}"
            if self.confinement is not None:
                self.confinement.close()
            self._ready.set()
            return
        finally:
            theirs.close()
        ours.setblocking(False)
        self._sock = ours
        self._tasks = [
            asyncio.create_task(self._read_log()),
            asyncio.create_task(self._read_events()),
        ]

    async def wait_ready(self) -> bool:
        await self._ready.wait()
        return self.ready

    def memory(self) -> int | None:
        """The host's proportional set size in bytes: its private memory plus its share of
        what it maps with others (weights in the page cache are shared with its replicas)."""
        if self.pid is None or self.state != "ready":
            return None
        try:
            text = Path(f"/proc/{self.pid}/smaps_rollup").read_text()
        except OSError:
            return None
        for line in text.splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
        return None

    # -- forking ------------------------------------------------------------------------

    async def fork(
        self,
        replica_id: str,
        worker_sock: socket.socket,
        tmpdir: Path,
        env: dict[str, str] | None = None,
        hold: bool = False,
    ) -> tuple[ForkedProcess, asyncio.StreamReader]:
        """Fork a replica speaking on `worker_sock`, with `env` added to its environment; its
        stderr comes back as a stream. With `hold`, the replica waits to run anything until
        `ForkedProcess.start()`."""
        if not self.ready or self._sock is None:
            raise HostUnavailable(f"warm host for {self.spec.name} is {self.state}")
        read_fd, write_fd = os.pipe()
        # Sandboxed, the child waits for `release` to close: see `release_fork`.
        hold_fd, release = os.pipe() if hold else (-1, -1)
        future: asyncio.Future[ForkedProcess] = asyncio.get_running_loop().create_future()
        self._forks[replica_id] = future
        try:
            message = json.dumps(
                {"op": "fork", "replica": replica_id, "tmpdir": str(tmpdir), "env": env or {}}
            )
            fds = [worker_sock.fileno(), write_fd] + ([hold_fd] if hold_fd >= 0 else [])
            await self._send(message.encode(), fds)
        except OSError as exc:
            self._forks.pop(replica_id, None)
            os.close(read_fd)
            if release >= 0:
                os.close(release)
            raise HostUnavailable(f"warm host for {self.spec.name} is gone: {exc}") from exc
        finally:
            os.close(write_fd)
            if hold_fd >= 0:
                os.close(hold_fd)
        try:
            process = await future
        except BaseException:  # the host failed, or the start was cancelled
            os.close(read_fd)
            if release >= 0:
                os.close(release)
            if self._forks.pop(replica_id, None) is not None:
                self._abandoned.add(replica_id)  # if it is forked after all, kill it
            raise
        process.release = release
        loop = asyncio.get_running_loop()
        stderr = asyncio.StreamReader(limit=_LOG_LIMIT)
        await loop.connect_read_pipe(lambda: _PipeReader(stderr), os.fdopen(read_fd, "rb", 0))
        return process, stderr

    async def _send(self, data: bytes, fds: list[int]) -> None:
        assert self._sock is not None
        while True:
            try:
                socket.send_fds(self._sock, [data], fds)
                return
            except BlockingIOError:  # the host is busy forking; its buffer frees shortly
                await asyncio.sleep(0.001)

    async def retire(self) -> None:
        """Fork no more; the host exits once its last replica has."""
        if self.state in ("starting", "ready"):
            self.state = "stopped"
            with contextlib.suppress(OSError):
                await self._send(json.dumps({"op": "retire"}).encode(), [])

    def kill(self) -> None:
        self.state = "stopped" if self.state != "failed" else self.state
        if self.confinement is not None:
            self.confinement.kill_all()
        if self._process and self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGKILL)

    async def wait_stopped(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- the host's events --------------------------------------------------------------

    async def _read_events(self) -> None:
        assert self._sock is not None
        loop = asyncio.get_running_loop()
        try:
            while data := await loop.sock_recv(self._sock, _PACKET):
                self._on_event(json.loads(data))
        except ConnectionError:
            pass  # it exited
        except (OSError, ValueError):
            logger.exception("warm host for %s broke its protocol", self.spec.name)
        finally:
            await self._on_exit()

    def _on_event(self, message: dict[str, Any]) -> None:
        event = message.get("ev")
        if event == "ready":
            if self.state == "starting":
                self.state = "ready"
            self.ever_ready = True
            self.setup_done = bool(message.get("setup_done"))
            self.note = message.get("note")
            self.timings = message.get("timings") or {}
            self._ready.set()
        elif event == "failed":
            self.state = "failed"
            self.error = message.get("error")
            self.retry_without_setup = bool(message.get("retry_without_setup"))
            self._ready.set()
        elif event == "forked":
            pid = message["pid"]  # in the sandbox's PID namespace, if sandboxed
            outer = self.confinement.find(pid) if self.confinement is not None else pid
            if outer is None:  # it exited before we could see it
                self._fork_failed(message["replica"], "the forked replica exited at once")
                return
            process = self._children[pid] = ForkedProcess(outer)
            if message["replica"] in self._abandoned:
                self._abandoned.discard(message["replica"])
                with contextlib.suppress(OSError):
                    os.kill(outer, signal.SIGKILL)
                return
            future = self._forks.pop(message["replica"], None)
            if future is not None and not future.done():
                future.set_result(process)
        elif event == "fork_failed":
            self._fork_failed(message["replica"], message.get("error") or "fork failed")
        elif event == "exit":
            child = self._children.pop(message["pid"], None)
            if child is not None:
                child.exited(message["code"])

    def _fork_failed(self, replica: str, error: str) -> None:
        future = self._forks.pop(replica, None)
        if future is not None and not future.done():
            future.set_exception(HostUnavailable(error))

    async def _read_log(self) -> None:
        assert self._process and self._process.stdout
        while chunk := await self._process.stdout.read(4096):
            self.log += chunk
            del self.log[: max(0, len(self.log) - _LOG_LIMIT)]

    async def _on_exit(self) -> None:
        assert self._process is not None
        code = await self._process.wait()
        if self.state in ("starting", "ready"):
            self.state = "failed"
            oom = self.confinement.out_of_memory() if self.confinement is not None else None
            self.error = self.error or f"warm host exited with code {code}" + (
                f" ({oom})" if oom else ""
            ) + (f":\n{self.log.decode(errors='replace').strip()}" if self.log else "")
        if self._sock is not None:
            self._sock.close()
        for future in self._forks.values():
            if not future.done():
                future.set_exception(HostUnavailable(f"warm host exited with code {code}"))
        self._forks.clear()
        for child in self._children.values():
            # Orphaned: nobody would reap it or tell us its fate. Stop it for sure.
            with contextlib.suppress(OSError):
                os.killpg(child.pid, signal.SIGKILL)
            child.exited(-signal.SIGKILL)
        self._children.clear()
        if self.confinement is not None:
            # Everything in the host's sandbox ends with it (its forks moved to groups of
            # their own end with their replicas).
            await asyncio.to_thread(self.confinement.close)
            await asyncio.to_thread(shutil.rmtree, self.confinement.scratch, True)
        self._ready.set()
