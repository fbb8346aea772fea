"""A replica as a worker process on this machine, and the frames it speaks.

Why a module of its own: this is the one place that knows a replica's process and the worker
protocol (`ember.worker.protocol`), apart from where replicas are chosen and tiers kept
(`local.py`). A `LocalReplica` is a worker process in its package's environment, connected by a
socketpair: forked from the package's warm host when one is ready (`warm_host.py`:
milliseconds), else spawned as `python -m ember.worker` (seconds for a model with heavy
imports). It turns the worker's frames into prediction events, and is where crashes and hangs
are caught: a worker that exits fails its in-flight predictions with the reason (marked
`retryable` where the prediction had started but shown no output, so the control plane may run
it elsewhere); a prediction still running well past its timeout (the predictor ignored the
interruption) gets its replica killed; so does a replica silent for `heartbeat_timeout`
seconds (frozen: SIGSTOP, a deadlock, swapping), though a busy predict() keeps heartbeating
from the worker's own thread. A worker sent SIGTERM (a spot machine's preemption notice) says
it is DRAINING and hands back what it had not started; the replica takes nothing new.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import time
import uuid
from pathlib import Path
from typing import Any, Protocol

from ember.packages.environment import Environment
from ember.packages.spec import PackageSpec
from ember.runtime.base import (
    Listener,
    PredictionEvent,
    PredictionHandle,
    PredictionRequest,
    PredictionResult,
    Replica,
    ReplicaState,
    ReplicaUnavailable,
    Tier,
    mentions_files,
)
from ember.runtime.processes import start_module, worker_env
from ember.runtime.sandbox import Confinement, Sandboxing
from ember.runtime.warm_host import HostUnavailable, WarmHost
from ember.worker import protocol

logger = logging.getLogger("ember.runtime")

# How long past its timeout a prediction may run before its replica is presumed hung.
HANG_GRACE_SECONDS = 5.0
# How long a worker that said it stopped may take to exit: what is left is the interpreter's
# teardown, which waits for the model's non-daemon `multiprocessing` children (and threads)
# forever. Cog's container ends them with the container; Ember ends the process group.
EXIT_GRACE_SECONDS = 5.0
_STDERR_LIMIT = 64 * 1024
# A replica silent this long is presumed frozen and killed (EMBER_HEARTBEAT_TIMEOUT overrides it
# for `ember serve`: `local.py`). Generous: a predictor holding the GIL in one C call blocks
# heartbeats too.
HEARTBEAT_TIMEOUT_SECONDS = 30.0
# How long a healthcheck may take to be answered: the worker's own deadline for the model's
# check (5 s, Cog's) plus room for a busy machine.
HEALTHCHECK_ANSWER_SECONDS = 10.0


class ReplicaProcess(Protocol):
    """What a replica needs of its process, spawned (asyncio's Process) or forked."""

    pid: int
    returncode: int | None

    async def wait(self) -> int: ...


class LocalReplica(Replica):
    def __init__(
        self,
        spec: PackageSpec,
        environment: Environment,
        outputs_dir: Path,
        replica_id: str,
        scratch_dir: Path,
        hang_grace: float = HANG_GRACE_SECONDS,
        host: WarmHost | None = None,
        tier: Tier = Tier.COLD,
        env: dict[str, str] | None = None,
        heartbeat_timeout: float = HEARTBEAT_TIMEOUT_SECONDS,
        sandboxing: Sandboxing | None = None,
    ) -> None:
        self.id = replica_id
        self.sandboxing = sandboxing  # None: unsandboxed
        self.confinement: Confinement | None = None
        # Sandboxed, output files are written in the sandbox's scratch folder, from where
        # they are moved to `outputs_dir` as each is announced.
        self._files_from: Path | None = None
        self._moving: asyncio.Task[Confinement] | None = None  # a fork on its way to its cgroups
        self.heartbeat_timeout = heartbeat_timeout
        # Checked (and sent by the worker) a few times per timeout: one late beat is no hang.
        self._heartbeat_every = min(protocol.DEFAULT_HEARTBEAT_SECONDS, heartbeat_timeout / 4)
        # Set in the worker before setup, forked or spawned (e.g. the GPUs it may use).
        self.env = {**(env or {}), protocol.HEARTBEAT_ENV: str(self._heartbeat_every)}
        self.host = host
        self.tier = Tier.WARM_HOST if host is not None else tier
        self.scratch_dir = scratch_dir
        self.hang_grace = hang_grace
        self.spec = spec
        self.environment = environment
        self.outputs_dir = outputs_dir
        self.state = ReplicaState.STARTING
        self.max_concurrency = spec.max_concurrency
        self.schema: dict[str, Any] | None = None
        self.setup_logs = ""
        self.setup_error: str | None = None
        self.timings: dict[str, float] = {}
        self.pid: int | None = None
        self.exit_code: int | None = None
        self._handles: dict[str, PredictionHandle] = {}
        self._kill_reasons: dict[str, str] = {}
        self._killed_because: str | None = None
        self._culprits: set[str] = set()  # predictions that hung: not to be run again
        self._heard_at: float | None = None  # the worker's last frame (monotonic)
        self._checked_at = 0.0
        self._heartbeat_check: asyncio.TimerHandle | None = None
        self._watchdogs: dict[str, asyncio.TimerHandle] = {}
        self._started = asyncio.Event()
        self._exited = asyncio.Event()
        self._stderr = bytearray()
        self._stderr_stream: asyncio.StreamReader | None = None
        self._launch_seconds = 0.0
        self.host_wait = 0.0  # waiting for a warm host that was still starting
        self._process: ReplicaProcess | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._health_checks: dict[str, asyncio.Future[str | None]] = {}

    # -- lifecycle --------------------------------------------------------------------

    async def launch(self) -> None:
        """Fork the worker from the warm host, or spawn it (also when the host just failed)."""
        began = time.perf_counter()
        parent, child = socket.socketpair()
        own_scratch = self.scratch_dir
        try:
            if self.host is not None:
                try:
                    await self._fork(child)
                except HostUnavailable:
                    logger.warning("replica %s: warm host unavailable, spawning", self.id)
                    self.host, self.tier = None, Tier.COLD
                    self.scratch_dir = own_scratch
                    # The host may have forked on that socket before failing: a new pair.
                    parent.close()
                    child.close()
                    parent, child = socket.socketpair()
            if self._process is None:
                self.scratch_dir.mkdir(parents=True, exist_ok=True)
                await self._spawn(child)
        except BaseException:
            parent.close()
            shutil.rmtree(self.scratch_dir, ignore_errors=True)
            if self.confinement is not None:
                self.confinement.close()
            raise
        finally:
            child.close()
        self._launch_seconds = time.perf_counter() - began
        assert self._process is not None
        self.pid = self.pid or self._process.pid
        reader, self._writer = await asyncio.open_unix_connection(sock=parent)
        self._tasks = [
            asyncio.create_task(self._read_stderr()),
            asyncio.create_task(self._read_loop(reader)),
        ]

    async def _fork(self, child: socket.socket) -> None:
        """A worker forked from the warm host; in the host's sandbox, if it has one, with
        cgroups of its own (its own memory limit, its own list of processes to end)."""
        assert self.host is not None
        host_box = self.host.confinement
        if host_box is not None:
            self.scratch_dir = host_box.scratch / self.id  # what the host's sandbox can see
        self.scratch_dir.mkdir(parents=True, exist_ok=True)
        # Where the fork will run setup() (the host did not), it waits until it is in its own
        # cgroups: a daemon setup() starts is then the replica's. Where the host ran setup,
        # the move (milliseconds: the kernel waits out an RCU grace period) overlaps the
        # fork's start instead, and the replica is not ready, so runs nothing, until it is done.
        hold = host_box is not None and not self.host.setup_done
        forked, self._stderr_stream = await self.host.fork(
            self.id, child, self.scratch_dir, self.env, hold=hold
        )
        self._process = forked
        if host_box is None:
            return
        self._files_from = host_box.outputs
        try:
            if hold:
                self.confinement = host_box.adopt(self.id, forked.pid, self.scratch_dir)
            else:
                self._moving = asyncio.create_task(
                    asyncio.to_thread(host_box.adopt, self.id, forked.pid, self.scratch_dir)
                )
        finally:
            forked.start()

    async def _spawn(self, child: socket.socket) -> None:
        if self.sandboxing is not None:
            self.confinement = await self.sandboxing.confine(
                self.id, self.spec, self.environment, self.scratch_dir, self.env
            )
            self._files_from = self.confinement.outputs
        env = worker_env(self.spec, self.environment, self.outputs_dir, self.confinement)
        # A private temp folder, removed when the replica exits however it exits.
        env.update(self.env, EMBER_WORKER_FD=str(child.fileno()), TMPDIR=str(self.scratch_dir))
        process = await start_module(
            self.environment,
            "ember.worker",
            child.fileno(),
            env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            confinement=self.confinement,
        )
        self._process, self._stderr_stream = process, process.stderr
        if self.confinement is not None:
            # The process started is bubblewrap; the worker is the command inside it.
            self.pid = await self.confinement.wait_for(process)

    def start_phases(self) -> dict[str, float]:
        """`host_wait` (for a warm host still starting), `fork` or `spawn` (until the process
        exists), then the worker's own timings: `load` (importing the predictor) and `setup`,
        absent when the warm host did them."""
        launch = "fork" if self.tier == Tier.WARM_HOST else "spawn"
        worker = {key.removesuffix("_time"): value for key, value in self.timings.items()}
        waited = {"host_wait": self.host_wait} if self.host_wait else {}
        return {**waited, launch: self._launch_seconds, **worker}

    async def wait_started(self) -> ReplicaState:
        await self._started.wait()
        return self.state

    async def wait_stopped(self) -> int | None:
        await self._exited.wait()
        return self.exit_code

    async def stop(self, drain: bool = True, timeout: float | None = None) -> None:
        """Drain (in-flight predictions finish; `timeout` bounds the wait, None = as long as
        they take) then stop; or kill at once. A replica already draining (preempted, or
        asked before) is waited for, not killed."""
        if self._exited.is_set():
            return
        if drain and self.state in (
            ReplicaState.READY,
            ReplicaState.STARTING,
            ReplicaState.DRAINING,
        ):
            if self.state != ReplicaState.DRAINING:
                self.state = ReplicaState.DRAINING
                with contextlib.suppress(ReplicaUnavailable):  # already going away
                    self._send({"op": protocol.OP_SHUTDOWN})
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._exited.wait()
                    return
        self.kill("replica was stopped")
        await self._exited.wait()

    def kill(self, reason: str) -> None:
        """Kill the worker and everything it started; in-flight predictions fail with reason."""
        self._killed_because = self._killed_because or reason
        for prediction_id in self._handles:
            self._kill_reasons.setdefault(prediction_id, reason)
        if self.confinement is not None:
            self.confinement.kill_all()
        if self._process and self._process.returncode is None:
            try:
                os.killpg(self._process.pid, signal.SIGKILL)
            except ProcessLookupError:
                # A forked worker that has not yet made its own process group.
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self._process.pid, signal.SIGKILL)

    def _kill_group(self) -> None:
        """Kill what is left of the worker's process group once the worker is gone, however it
        went (a clean drain included): a server or helper setup() started shares the group
        and would otherwise outlive its replica, holding ports, memory or a GPU. The group's
        id stays reserved while any member lives, so this cannot reach another group; one
        that is empty answers ESRCH. Processes that left the group (setsid, a daemon's double
        fork into a new session) are out of its reach, but not out of its sandbox's cgroup,
        which is ended whole."""
        assert self._process is not None
        if self.confinement is not None:
            self.confinement.kill_all()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, signal.SIGKILL)

    # -- predictions ------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return len(self._handles)

    def submit(
        self, request: PredictionRequest, listener: Listener | None = None
    ) -> PredictionHandle:
        if self.state not in (ReplicaState.STARTING, ReplicaState.READY):
            raise ReplicaUnavailable(f"replica {self.id} is {self.state.value}")
        if request.id in self._handles:
            raise ValueError(f"prediction {request.id} is already running on replica {self.id}")
        handle = PredictionHandle(request, self.cancel, listener)
        self._send(
            {
                "op": protocol.OP_PREDICT,
                "id": request.id,
                "input": request.input,
                "context": request.context,
                "timeout": request.timeout,
                "method": request.method,
            }
        )
        self._handles[request.id] = handle  # only once the worker has it
        return handle

    def cancel(self, prediction_id: str) -> None:
        if prediction_id in self._handles:
            with contextlib.suppress(ReplicaUnavailable):  # dying: its exit fails it anyway
                self._send({"op": protocol.OP_CANCEL, "id": prediction_id})

    async def healthcheck(self) -> str | None:
        if self.state != ReplicaState.READY or not self.has_healthcheck:
            return None  # Cog checks only a ready predictor; starting is not unhealthy
        check_id = f"hc_{uuid.uuid4().hex[:12]}"
        answer: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._health_checks[check_id] = answer
        try:
            self._send({"op": protocol.OP_HEALTHCHECK, "id": check_id})
            return await asyncio.wait_for(answer, HEALTHCHECK_ANSWER_SECONDS)
        except ReplicaUnavailable as exc:
            return f"Healthcheck error: {exc}"
        except TimeoutError:
            return (
                f"Healthcheck error: replica {self.id} did not answer within "
                f"{HEALTHCHECK_ANSWER_SECONDS:.0f} s"
            )
        finally:
            self._health_checks.pop(check_id, None)

    def _send(self, message: dict[str, Any]) -> None:
        if self._writer is None or self._writer.is_closing():
            raise ReplicaUnavailable(f"replica {self.id} is not connected")
        self._writer.write(protocol.encode(message))

    # -- the worker's events ----------------------------------------------------------

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                header = await reader.readexactly(protocol.HEADER.size)
                (size,) = protocol.HEADER.unpack(header)
                self._on_message(protocol.decode(await reader.readexactly(size)))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except Exception as exc:  # a frame we cannot read: this replica cannot be trusted
            logger.exception("replica %s sent an unreadable frame", self.id)
            self.kill(f"replica {self.id} broke the worker protocol ({exc}) and was stopped")
        finally:
            await self._on_exit()

    def _on_message(self, message: dict[str, Any]) -> None:
        self._heard_at = time.monotonic()  # any frame shows the worker alive
        event = message.get("ev")
        prediction_id = message.get("id")
        handle = self._handles.get(prediction_id) if prediction_id else None
        if event == protocol.EV_STATE:
            self._on_state(message)
        elif event == protocol.EV_LOG:
            if handle is not None:
                handle.publish(PredictionEvent("log", handle.id, message["data"]))
            elif self.state == ReplicaState.STARTING:
                self.setup_logs += message["data"]
                if self.on_setup_log is not None:
                    self.on_setup_log(message["data"])
        elif event == protocol.EV_STARTED and handle is not None:
            handle.publish(PredictionEvent("started", handle.id))
            self._arm_watchdog(handle)
        elif event == protocol.EV_OUTPUT and handle is not None:
            self._collect_files(handle.id, message["value"])
            handle.publish(PredictionEvent("output", handle.id, message["value"]))
        elif event == protocol.EV_METRIC and handle is not None:
            metric = {key: message[key] for key in ("name", "value", "mode")}
            handle.publish(PredictionEvent("metric", handle.id, metric))
        elif event == protocol.EV_RETURNED and handle is not None:
            # Draining, it will not start this one: safe to run on another replica.
            self._complete(
                handle,
                PredictionResult(
                    id=handle.id, status="failed", error=message.get("reason"), never_started=True
                ),
            )
        elif event == protocol.EV_HEALTH:
            answer = self._health_checks.get(str(prediction_id))
            if answer is not None and not answer.done():
                answer.set_result(message.get("error"))
        elif event == protocol.EV_DONE and handle is not None:
            self._collect_files(handle.id, message.get("output"))
            self._complete(
                handle,
                PredictionResult(
                    id=handle.id,
                    status=message["status"],
                    output=message.get("output"),
                    error=message.get("error"),
                    metrics=message.get("metrics") or {},
                    validation_errors=message.get("validation") or [],
                    files_dir=self.outputs_dir / handle.id,
                ),
            )

    def _on_state(self, message: dict[str, Any]) -> None:
        state = message["state"]
        if state == ReplicaState.READY and self._moving is not None:
            # Ready once in its own cgroups (see `_fork`), not before.
            moving, self._moving = self._moving, None
            moving.add_done_callback(lambda _: self._moved(moving, message))
            return
        if state == ReplicaState.READY:
            self.schema = message.get("schema")
            self.max_concurrency = message.get("max_concurrency", self.max_concurrency)
            self.timings = message.get("timings", {})
            self.has_healthcheck = bool(message.get("healthcheck", True))
            self.startup_health = message.get("healthcheck_error")
            if self.state == ReplicaState.STARTING:
                self.state = ReplicaState.READY
            if self._heartbeat_check is None:
                self._watch_heartbeat()
            self._started.set()
        elif state == ReplicaState.SETUP_FAILED:
            self.state = ReplicaState.SETUP_FAILED
            self.setup_error = message.get("error")
            self.setup_logs = message.get("logs", self.setup_logs)
            self._started.set()
        elif state == ReplicaState.DRAINING and self.state in (
            ReplicaState.STARTING,
            ReplicaState.READY,
        ):
            logger.warning("replica %s was sent SIGTERM (preempted): draining", self.id)
            self.state = ReplicaState.DRAINING
        elif state == ReplicaState.STOPPED and self.state != ReplicaState.SETUP_FAILED:
            self.state = ReplicaState.STOPPED
            self._tasks.append(asyncio.create_task(self._end_lingering_exit()))

    def _moved(self, moving: asyncio.Task[Confinement], ready: dict[str, Any]) -> None:
        if moving.cancelled() or moving.exception() is not None:
            self.kill(f"replica {self.id} could not be put in its cgroups: {moving.exception()}")
            return
        self.confinement = moving.result()
        if self._exited.is_set():  # it ended meanwhile: end what it left
            self.confinement.close()
            return
        self._on_state(ready)

    async def _end_lingering_exit(self) -> None:
        """Kill a worker that stopped but does not exit (see EXIT_GRACE_SECONDS)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(EXIT_GRACE_SECONDS):
                await self._exited.wait()
                return
        logger.warning(
            "replica %s stopped but did not exit within %gs (a process its model started "
            "keeps it waiting): killing it",
            self.id,
            EXIT_GRACE_SECONDS,
        )
        self.kill("it stopped but did not exit")

    def _watch_heartbeat(self) -> None:
        """Kill the replica once it has been silent for `heartbeat_timeout` seconds, watched
        from when it is ready: setup may hold the GIL in one long C call (loading weights),
        and a setup that hangs is the start timeout's business. A check that runs late is
        skipped: our own loop was busy, and the frames proving the worker alive may be waiting
        unread."""
        assert self._heard_at is not None
        now = time.monotonic()
        late = self._checked_at > 0 and now - self._checked_at > 2 * self._heartbeat_every
        self._checked_at = now
        if not late and now - self._heard_at > self.heartbeat_timeout:
            self.kill(f"replica stopped responding (no heartbeat for {self.heartbeat_timeout:g} s)")
            return
        loop = asyncio.get_running_loop()
        self._heartbeat_check = loop.call_later(self._heartbeat_every, self._watch_heartbeat)

    def _arm_watchdog(self, handle: PredictionHandle) -> None:
        timeout = handle.request.timeout
        if timeout:
            loop = asyncio.get_running_loop()
            self._watchdogs[handle.id] = loop.call_later(
                timeout + self.hang_grace, self._hung, handle.id, timeout
            )

    def _hung(self, prediction_id: str, timeout: float) -> None:
        if prediction_id in self._handles:
            self._culprits.add(prediction_id)
            self._kill_reasons[prediction_id] = (
                f"prediction timed out after {timeout:g} s and did not stop when interrupted; "
                "its replica was killed"
            )
            self.kill(f"replica was killed because prediction {prediction_id} hung")

    def _complete(self, handle: PredictionHandle, result: PredictionResult) -> None:
        self._handles.pop(handle.id, None)
        watchdog = self._watchdogs.pop(handle.id, None)
        if watchdog:
            watchdog.cancel()
        handle.finish(result)

    async def _read_stderr(self) -> None:
        assert self._stderr_stream is not None
        while chunk := await self._stderr_stream.read(4096):
            self._stderr += chunk[: _STDERR_LIMIT - len(self._stderr)]

    def _collect_files(self, prediction_id: str, output: Any) -> None:
        """Move a sandboxed prediction's output files to where they are served, when `output`
        names any (most outputs, a token of text each, name none: no I/O for them). Only
        regular files move; each is checked again once out of the sandbox's reach, where it
        can no longer be swapped for a link to a file of the server's."""
        if self._files_from is None or not mentions_files(output):
            return
        target = self.outputs_dir / prediction_id
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
        try:
            outputs = os.open(self._files_from, flags)
        except OSError:
            return  # none written
        try:
            folder = os.open(prediction_id, flags, dir_fd=outputs)
        except OSError:
            return
        finally:
            os.close(outputs)
        try:
            with os.scandir(folder) as entries:
                names = [e.name for e in entries if e.is_file(follow_symlinks=False)]
            if names:
                target.mkdir(parents=True, exist_ok=True)
            for name in names:
                os.replace(name, target / name, src_dir_fd=folder)
                if not (target / name).is_file() or (target / name).is_symlink():
                    (target / name).unlink()
        except OSError:
            logger.warning("replica %s: could not collect outputs of %s", self.id, prediction_id)
        finally:
            os.close(folder)

    async def _on_exit(self) -> None:
        assert self._process is not None
        self.exit_code = await self._process.wait()
        if self.confinement is not None and self.host is None and self.exit_code > 128:
            # bubblewrap passes on a death by signal N as 128 + N, as a shell does.
            self.exit_code = 128 - self.exit_code
        if self._moving is not None:  # it ended before it was ready: its groups all the same
            with contextlib.suppress(Exception):
                self.confinement = await self._moving
            self._moving = None
        out_of_memory = self.confinement.out_of_memory() if self.confinement else None
        if out_of_memory:
            self._killed_because = self.failure = out_of_memory
            for prediction_id in self._handles:
                self._kill_reasons[prediction_id] = out_of_memory
        elif self.exit_code and self.state == ReplicaState.READY:
            self.failure = self._killed_because or f"exited with code {self.exit_code}"
        self._kill_group()
        # Read stderr to its end (its last writer was just killed, if it lingered) so that a
        # setup error below quotes all of it and the pipe is closed when the replica says so.
        await asyncio.wait(self._tasks[:1], timeout=1)
        if self._heartbeat_check is not None:
            self._heartbeat_check.cancel()
        if self.confinement is not None:
            await asyncio.to_thread(self.confinement.close)
        await asyncio.to_thread(shutil.rmtree, self.scratch_dir, True)
        if self._writer:
            self._writer.close()
        # The state changes first: listeners told about the failures below route new work,
        # and must not pick this replica.
        if self.state == ReplicaState.STARTING:
            self.state = ReplicaState.SETUP_FAILED
            stderr = self._stderr.decode(errors="replace").strip()
            why = f"; {self._killed_because}" if self._killed_because else ""
            self.setup_error = (
                f"replica process exited with code {self.exit_code} during setup{why}"
                + (f":\n{stderr}" if stderr else "")
            )
        elif self.state != ReplicaState.SETUP_FAILED:
            self.state = ReplicaState.STOPPED
        for handle in list(self._handles.values()):
            self._complete(handle, self._lost(handle))
        for answer in self._health_checks.values():
            if not answer.done():
                answer.set_result(f"Healthcheck error: replica {self.id} stopped")
        self._started.set()
        self._exited.set()

    def _lost(self, handle: PredictionHandle) -> PredictionResult:
        """The end of a prediction whose process is gone. One that had started but shown no
        output may run again elsewhere (no client saw a thing), unless it is the one that
        hung: it would hang there too."""
        started = handle.started_at is not None
        reason = self._kill_reasons.get(
            handle.id,
            f"replica process exited with code {self.exit_code} while running this prediction",
        )
        culprit = handle.id in self._culprits
        if started and handle.produced_output and not culprit:
            reason += "; it had already produced output, so it cannot be run again"
        return PredictionResult(
            id=handle.id,
            status="failed",
            error=reason,
            never_started=not started,
            retryable=started and not handle.produced_output and not culprit,
        )
