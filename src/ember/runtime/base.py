"""The runtime interface: where and how replicas run.

The control plane starts, stops, counts and routes to replicas only through `Runtime` and
`Replica`; `local` runs them as processes on this machine and a cluster runtime can run them
elsewhere. A prediction is followed through a `PredictionHandle`: its events as they happen
(start, log chunks, streamed output items) and its final `PredictionResult`.
"""

from __future__ import annotations

import abc
import asyncio
import datetime
import enum
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ember.packages.spec import PackageSpec
from ember.worker.outputs import FILE_KEY
from ember.worker.protocol import PREDICT

logger = logging.getLogger("ember.runtime")


class ReplicaState(enum.StrEnum):
    """A replica's life. DRAINING: it takes nothing new and finishes what it runs, because the
    control plane is stopping it or because it was preempted (sent SIGTERM, as a spot machine
    is before it goes); either way nothing more is routed to it."""

    STARTING = "STARTING"
    READY = "READY"
    SETUP_FAILED = "SETUP_FAILED"
    DRAINING = "DRAINING"
    STOPPED = "STOPPED"


class Tier(enum.StrEnum):
    """What a runtime keeps ready so that a replica starts fast (fastest first)."""

    WARM_HOST = "warm-host"  # a process with the imports done (and setup run) forks replicas
    DISK = "disk"  # weights and libraries held in the page cache; a full start maps them
    COLD = "cold"  # nothing kept: a full start


@dataclass
class TierStatus:
    """How ready a runtime is to start a package's next replica."""

    tier: Tier
    ready: bool
    detail: str | None = None
    setup_in_host: bool = False
    memory_bytes: int | None = None


class ReplicaUnavailable(Exception):
    """The replica cannot take predictions (not ready, draining, or gone)."""


@dataclass
class PredictionRequest:
    id: str
    input: dict[str, Any]
    context: dict[str, Any] = field(default_factory=dict)
    timeout: float | None = None
    method: str = PREDICT  # or the OpenAI route the predictor serves itself


@dataclass
class PredictionEvent:
    """Something that happened to a prediction: started, log, output (one streamed item)."""

    type: str
    prediction_id: str
    data: Any = None


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass
class PredictionResult:
    id: str
    status: str  # succeeded | failed | canceled
    output: Any = None
    error: str | None = None
    logs: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    started_at: datetime.datetime | None = None
    completed_at: datetime.datetime | None = None
    validation_errors: list[dict[str, Any]] = field(default_factory=list)
    files_dir: Path | None = None
    # The replica went away before it began this prediction: it is safe to run elsewhere.
    never_started: bool = False
    # The replica went away (crashed, killed, frozen without heartbeat, its node lost) after it
    # began this prediction but before any output: no client saw a thing, so it may run again
    # elsewhere (the control plane's choice: its deployment's `prediction_retries`).
    retryable: bool = False


Listener = Callable[["PredictionEvent | PredictionResult"], None]


class EventBuffer:
    """The listener of a prediction whose owner reads its events by iterating them (`ember
    run`, tests): queues each event, and gathers the logs into the result."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[PredictionEvent | None] = asyncio.Queue()
        self._logs: list[str] = []

    def __call__(self, event: PredictionEvent | PredictionResult) -> None:
        if isinstance(event, PredictionResult):
            event.logs = "".join(self._logs)
            self.queue.put_nowait(None)
            return
        if event.type == "log":
            self._logs.append(event.data)
        self.queue.put_nowait(event)


class PredictionHandle:
    """One submitted prediction: its events go to one listener, the moment the replica
    reports them, with no task or queue hop in between (the control plane's hot path), then
    its result. Without a listener of its own, the handle keeps an `EventBuffer` and its
    events can be iterated; nothing else keeps them.
    """

    def __init__(
        self,
        request: PredictionRequest,
        cancel: Callable[[str], None],
        listener: Listener | None = None,
    ) -> None:
        self.request = request
        self._cancel = cancel
        self._buffer = EventBuffer() if listener is None else None
        self._listener: Listener = listener or self._buffer  # type: ignore[assignment]
        self._result: asyncio.Future[PredictionResult] = asyncio.get_running_loop().create_future()
        self.started_at: datetime.datetime | None = None
        self.produced_output = False  # once it has, it must not silently run again elsewhere

    @property
    def id(self) -> str:
        return self.request.id

    @property
    def done(self) -> bool:
        return self._result.done()

    def publish(self, event: PredictionEvent) -> None:
        if event.type == "output":
            self.produced_output = True
        elif event.type == "started":
            self.started_at = utcnow()
        self._tell(event)

    def finish(self, result: PredictionResult) -> None:
        if not self._result.done():
            result.started_at = result.started_at or self.started_at
            result.completed_at = result.completed_at or utcnow()
            self._result.set_result(result)
            self._tell(result)

    def _tell(self, event: PredictionEvent | PredictionResult) -> None:
        """Hand an event to the listener; its failure must not break the replica's reader."""
        try:
            self._listener(event)
        except Exception:
            logger.exception("listener of prediction %s failed", self.id)

    async def events(self) -> AsyncIterator[PredictionEvent]:
        """Events until the prediction ends (the result is then ready); only for a handle
        submitted without a listener of its own."""
        if self._buffer is None:
            raise RuntimeError("this prediction's events go to the listener it was given")
        while (event := await self._buffer.queue.get()) is not None:
            yield event

    async def result(self) -> PredictionResult:
        return await asyncio.shield(self._result)

    def cancel(self) -> None:
        self._cancel(self.id)


class Replica(abc.ABC):
    """One running copy of a model."""

    id: str
    spec: PackageSpec
    state: ReplicaState
    max_concurrency: int
    schema: dict[str, Any] | None
    setup_logs: str
    setup_error: str | None
    tier: Tier = Tier.COLD  # what it started from
    # Its machine went away (a cluster node lost): whatever it ended in, not the model's doing.
    lost: bool = False
    # Why it ended, when it ended of its own (out of memory at its sandbox's limit, a crash):
    # not set for a replica stopped on purpose.
    failure: str | None = None
    # Whether its model has a healthcheck to ask (False once the replica says it has none:
    # then nobody sends it one), and why that check failed once set up (None: it passed).
    has_healthcheck: bool = True
    startup_health: str | None = None
    # Told each chunk of the setup's output as it comes (e.g. an engine's load progress).
    on_setup_log: Callable[[str], None] | None = None

    @property
    @abc.abstractmethod
    def in_flight(self) -> int:
        """Predictions submitted and not finished."""

    def start_phases(self) -> dict[str, float]:
        """Seconds spent in each start phase the replica measured itself (e.g. load, setup)."""
        return {}

    @abc.abstractmethod
    async def wait_started(self) -> ReplicaState:
        """Wait until setup ends: READY, or SETUP_FAILED / STOPPED with `setup_error` set."""

    @abc.abstractmethod
    async def wait_stopped(self) -> int | None:
        """Wait until the replica's process is gone; its exit code where known."""

    @abc.abstractmethod
    def submit(
        self, request: PredictionRequest, listener: Listener | None = None
    ) -> PredictionHandle:
        """Start a prediction. Beyond max_concurrency the worker queues it in order."""

    @abc.abstractmethod
    async def stop(self, drain: bool = True, timeout: float | None = None) -> None:
        """Drain (finish in-flight work, take no more) then stop; or kill at once."""

    async def healthcheck(self) -> str | None:
        """Run the model's own healthcheck (Cog's `healthcheck()`, Truss's `is_healthy()`):
        None when healthy or when it has none, else why not."""
        return None


class Runtime(abc.ABC):
    """Starts replicas of packages."""

    outputs_dir: Path  # where replicas' output files are served from
    # Whether replicas run sandboxed ("on" or "off"), and the longer story for the operator.
    sandbox_mode: str = "off"
    sandbox_detail: str = "off"

    @abc.abstractmethod
    async def start(self) -> None:
        """Connect to what runs the replicas (a cluster), before the first start."""

    @abc.abstractmethod
    async def prepare(
        self, spec: PackageSpec, on_progress: Callable[[str], None] | None = None
    ) -> Any:
        """Build (or reuse) the package's environment where its next replica will run, telling
        `on_progress` each line of the build; returns the environment."""

    @abc.abstractmethod
    async def start_replica(self, spec: PackageSpec, tier: Tier = Tier.WARM_HOST) -> Replica:
        """Start a replica from the fastest tier ready for its package, but no faster than
        `tier` (a deployment set to start cold starts cold even where another deployment of
        the package keeps a warm host); returns once its process exists (use `wait_started`
        for READY)."""

    @abc.abstractmethod
    async def keep_ready(self, wanted: list[tuple[PackageSpec, Tier]]) -> None:
        """Keep each package's tier ready, and nothing for packages not listed (idempotent;
        called again whenever the choice may change)."""

    def readiness(self, spec: PackageSpec) -> TierStatus:
        """What a start of `spec` would start from now."""
        return TierStatus(Tier.COLD, ready=True)

    def placement(self, spec: PackageSpec) -> str | None:
        """Why a replica of `spec` waits to be placed, while one does (a cluster with no room
        for it yet); None otherwise. Local processes are never waiting for a place."""
        return None

    @abc.abstractmethod
    async def close(self) -> None:
        """Release what the runtime keeps ready (after every replica has stopped)."""


def mentions_files(value: Any) -> bool:
    """Whether an output holds a file marker (a file the worker wrote)."""
    if isinstance(value, dict):
        return set(value) == {FILE_KEY} or any(mentions_files(v) for v in value.values())
    if isinstance(value, list):
        return any(mentions_files(v) for v in value)
    return False


def replace_files(value: Any, convert: Callable[[Path], Any], files_dir: Path) -> Any:
    """Swap the worker's file markers in an output for whatever `convert` makes of the file
    (a local path, a URL, a data URI)."""
    if isinstance(value, dict):
        if set(value) == {FILE_KEY}:
            return convert(files_dir / value[FILE_KEY])
        return {k: replace_files(v, convert, files_dir) for k, v in value.items()}
    if isinstance(value, list):
        return [replace_files(v, convert, files_dir) for v in value]
    return value
