"""Replicas as processes on this machine.

Each replica is `python -m ember.worker` in its package's environment, connected by an
inherited socketpair. The replica object turns the worker's frames into prediction events,
and is where crashes and hangs are caught: a worker that exits fails its in-flight predictions
with the reason; a prediction still running well past its timeout (the predictor ignored the
interruption) gets its replica killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ember
from ember.packages.environment import Environment, ensure_environment, require_system_packages
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
    Runtime,
)
from ember.worker import protocol

logger = logging.getLogger("ember.runtime")

# How long past its timeout a prediction may run before its replica is presumed hung.
HANG_GRACE_SECONDS = 5.0
_STDERR_LIMIT = 64 * 1024


class LocalReplica(Replica):
    def __init__(
        self,
        spec: PackageSpec,
        environment: Environment,
        outputs_dir: Path,
        replica_id: str,
        scratch_dir: Path,
        hang_grace: float = HANG_GRACE_SECONDS,
    ) -> None:
        self.id = replica_id
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
        self._watchdogs: dict[str, asyncio.TimerHandle] = {}
        self._started = asyncio.Event()
        self._exited = asyncio.Event()
        self._stderr = bytearray()
        self._process: asyncio.subprocess.Process | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle --------------------------------------------------------------------

    def _worker_env(self, fd: int) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            EMBER_WORKER_FD=str(fd),
            EMBER_PACKAGE_SPEC=self.spec.model_dump_json(),
            EMBER_OUTPUTS_DIR=str(self.outputs_dir),
            PYTHONUNBUFFERED="1",
            # A private temp folder, removed when the replica exits however it exits.
            TMPDIR=str(self.scratch_dir),
        )
        if self.environment.shared_with_ember:
            # Ember's own interpreter: make sure it finds this very copy of ember.
            source = str(Path(ember.__file__).resolve().parents[1])
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [source, env.get("PYTHONPATH")]))
        else:
            # A model environment sees ember through its .pth link and nothing else of ours.
            env.pop("PYTHONPATH", None)
        return env

    async def launch(self) -> None:
        self.scratch_dir.mkdir(parents=True, exist_ok=True)
        parent, child = socket.socketpair()
        try:
            self._process = await asyncio.create_subprocess_exec(
                str(self.environment.python),
                "-m",
                "ember.worker",
                pass_fds=(child.fileno(),),
                env=self._worker_env(child.fileno()),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,  # a terminal's Ctrl-C reaches Ember, which drains
            )
        finally:
            child.close()
        self.pid = self._process.pid
        reader, self._writer = await asyncio.open_unix_connection(sock=parent)
        self._tasks = [
            asyncio.create_task(self._read_stderr()),
            asyncio.create_task(self._read_loop(reader)),
        ]

    def start_phases(self) -> dict[str, float]:
        """The worker's own timings: `load` (importing the predictor), `setup`."""
        return {key.removesuffix("_time"): value for key, value in self.timings.items()}

    async def wait_started(self) -> ReplicaState:
        await self._started.wait()
        return self.state

    async def wait_stopped(self) -> int | None:
        await self._exited.wait()
        return self.exit_code

    async def stop(self, drain: bool = True, timeout: float | None = None) -> None:
        """Drain (in-flight predictions finish; `timeout` bounds the wait, None = as long as
        they take) then stop; or kill at once."""
        if self._exited.is_set():
            return
        if drain and self.state in (ReplicaState.READY, ReplicaState.STARTING):
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
        for prediction_id in self._handles:
            self._kill_reasons.setdefault(prediction_id, reason)
        if self._process and self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
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
            }
        )
        self._handles[request.id] = handle  # only once the worker has it
        return handle

    def cancel(self, prediction_id: str) -> None:
        if prediction_id in self._handles:
            with contextlib.suppress(ReplicaUnavailable):  # dying: its exit fails it anyway
                self._send({"op": protocol.OP_CANCEL, "id": prediction_id})

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
        elif event == protocol.EV_STARTED and handle is not None:
            handle.publish(PredictionEvent("started", handle.id))
            self._arm_watchdog(handle)
        elif event == protocol.EV_OUTPUT and handle is not None:
            handle.publish(PredictionEvent("output", handle.id, message["value"]))
        elif event == protocol.EV_DONE and handle is not None:
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
        if state == ReplicaState.READY:
            self.schema = message.get("schema")
            self.max_concurrency = message.get("max_concurrency", self.max_concurrency)
            self.timings = message.get("timings", {})
            if self.state == ReplicaState.STARTING:
                self.state = ReplicaState.READY
            self._started.set()
        elif state == ReplicaState.SETUP_FAILED:
            self.state = ReplicaState.SETUP_FAILED
            self.setup_error = message.get("error")
            self.setup_logs = message.get("logs", self.setup_logs)
            self._started.set()
        elif state == ReplicaState.STOPPED and self.state != ReplicaState.SETUP_FAILED:
            self.state = ReplicaState.STOPPED

    def _arm_watchdog(self, handle: PredictionHandle) -> None:
        timeout = handle.request.timeout
        if timeout:
            loop = asyncio.get_running_loop()
            self._watchdogs[handle.id] = loop.call_later(
                timeout + self.hang_grace, self._hung, handle.id, timeout
            )

    def _hung(self, prediction_id: str, timeout: float) -> None:
        if prediction_id in self._handles:
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
        assert self._process and self._process.stderr
        while chunk := await self._process.stderr.read(4096):
            self._stderr += chunk[: _STDERR_LIMIT - len(self._stderr)]

    async def _on_exit(self) -> None:
        assert self._process is not None
        self.exit_code = await self._process.wait()
        await asyncio.to_thread(shutil.rmtree, self.scratch_dir, True)
        if self._writer:
            self._writer.close()
        # The state changes first: listeners told about the failures below route new work,
        # and must not pick this replica.
        if self.state == ReplicaState.STARTING:
            self.state = ReplicaState.SETUP_FAILED
            stderr = self._stderr.decode(errors="replace").strip()
            self.setup_error = f"replica process exited with code {self.exit_code} during setup" + (
                f":\n{stderr}" if stderr else ""
            )
        elif self.state != ReplicaState.SETUP_FAILED:
            self.state = ReplicaState.STOPPED
        crashed = f"replica process exited with code {self.exit_code} while running this prediction"
        for handle in list(self._handles.values()):
            reason = self._kill_reasons.get(handle.id, crashed)
            self._complete(
                handle,
                PredictionResult(
                    id=handle.id,
                    status="failed",
                    error=reason,
                    never_started=handle.started_at is None,
                ),
            )
        self._started.set()
        self._exited.set()


class LocalRuntime(Runtime):
    """Runs replicas as local processes; builds package environments under `data_dir`."""

    def __init__(self, data_dir: Path, hang_grace: float = HANG_GRACE_SECONDS) -> None:
        self.data_dir = data_dir
        self.hang_grace = hang_grace
        self.envs_dir = data_dir / "envs"
        self.outputs_dir = data_dir / "outputs"
        self._environments: dict[str, Environment] = {}

    async def prepare(
        self, spec: PackageSpec, on_progress: Callable[[str], None] | None = None
    ) -> Environment:
        """Check system packages and build (or reuse) the package's environment."""
        require_system_packages(spec.system_packages, package_name=spec.name)
        environment = await asyncio.to_thread(
            ensure_environment,
            spec.requirements,
            cache_dir=self.envs_dir,
            python_version=spec.python_version,
            on_progress=on_progress,
        )
        self._environments[spec.root] = environment
        return environment

    async def start_replica(self, spec: PackageSpec) -> LocalReplica:
        environment = self._environments.get(spec.root) or await self.prepare(spec)
        self.outputs_dir.mkdir(parents=True, exist_ok=True)
        replica_id = f"r-{uuid.uuid4().hex[:10]}"
        replica = LocalReplica(
            spec,
            environment,
            self.outputs_dir,
            replica_id,
            scratch_dir=self.data_dir / "scratch" / replica_id,
            hang_grace=self.hang_grace,
        )
        await replica.launch()
        return replica


def default_data_dir() -> Path:
    return Path(os.environ.get("EMBER_HOME", Path.home() / ".ember"))
