"""Runs one deployment's predictions: a FIFO of accepted predictions and the replica that
serves them.

Requests beyond the replica's concurrency wait here, in order, instead of being refused
(Cog answers 409); a prediction canceled while waiting never reaches a replica. The replica
starts on the first request (or at deploy) and is started again after it dies. Everything
the runner learns is reported through `on_event`, so it knows nothing of storage or HTTP.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from ember.control.predictions import PredictionState
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

logger = logging.getLogger("ember.control")
PREFETCH = 1

# (prediction, event) with event in: started, output, logs, done
OnEvent = Callable[[PredictionState, str], None]
ResolveInput = Callable[[dict[str, Any]], dict[str, Any]]


class DeploymentRunner:
    def __init__(
        self,
        name: str,
        spec: PackageSpec,
        runtime: Runtime,
        on_event: OnEvent,
        resolve_input: ResolveInput = lambda value: value,
    ) -> None:
        self.name = name
        self.spec = spec
        self.runtime = runtime
        self.on_event = on_event
        self.resolve_input = resolve_input
        self.queue: collections.deque[PredictionState] = collections.deque()
        self.replica: Replica | None = None
        self.running: dict[str, tuple[PredictionState, PredictionHandle]] = {}
        self.last_setup_error: str | None = None
        self._starting: asyncio.Task[None] | None = None
        self._closed = False

    # -- intake -------------------------------------------------------------------------

    def submit(self, state: PredictionState) -> None:
        """Accept a prediction; it runs when a replica slot is free."""
        self.queue.append(state)
        self._pump()

    def cancel(self, state: PredictionState) -> bool:
        """Cancel a waiting or running prediction. False when it is not here."""
        if state in self.queue:
            self.queue.remove(state)
            self._finish(state, "canceled")
            return True
        running = self.running.get(state.id)
        if running is not None:
            running[1].cancel()
            return True
        return False

    @property
    def outstanding(self) -> int:
        return len(self.queue) + len(self.running)

    # -- replica --------------------------------------------------------------------------

    def ensure_replica(self) -> None:
        """Start a replica unless one is running or starting."""
        if self._closed or self._starting is not None:
            return
        if self.replica is not None and self.replica.state in (
            ReplicaState.STARTING,
            ReplicaState.READY,
        ):
            return
        self._starting = asyncio.create_task(self._start_replica())

    async def _start_replica(self) -> None:
        try:
            replica = await self.runtime.start_replica(self.spec)
            self.replica = replica
            state = await replica.wait_started()
            if state != ReplicaState.READY:
                self.last_setup_error = replica.setup_error or f"replica ended {state.value}"
                logger.error("%s: replica failed to start:\n%s", self.name, self.last_setup_error)
                self._fail_queue(f"the model failed to start: {self.last_setup_error}")
        except Exception as exc:  # environment build, spawn failures
            self.last_setup_error = str(exc)
            logger.exception("%s: cannot start a replica", self.name)
            self._fail_queue(f"the model failed to start: {exc}")
        finally:
            self._starting = None
        self._pump()

    def _fail_queue(self, reason: str) -> None:
        while self.queue:
            self._finish(self.queue.popleft(), "failed", error=reason)

    # -- dispatch -------------------------------------------------------------------------

    def _capacity(self) -> int:
        """Free slots, plus one queued in the worker: the replica starts its next prediction
        the moment one ends instead of idling for a round trip through this loop. Canceling
        a prediction queued there still works (the worker withdraws it)."""
        replica = self.replica
        if replica is None or replica.state != ReplicaState.READY:
            return 0
        return replica.max_concurrency + PREFETCH - len(self.running)

    def _pump(self) -> None:
        """Hand waiting predictions to the replica while it has free slots."""
        if not self.queue:
            return
        if self._capacity() <= 0:
            self.ensure_replica()
            return
        while self.queue and self._capacity() > 0:
            state = self.queue.popleft()
            assert self.replica is not None
            try:
                handle = self.replica.submit(
                    PredictionRequest(
                        id=state.id,
                        input=self.resolve_input(state.input),
                        context={"deployment": self.name},
                        timeout=self.spec.timeout,
                    ),
                    self._listener(state),
                )
            except ReplicaUnavailable:
                self.queue.appendleft(state)
                self.ensure_replica()
                return
            self.running[state.id] = (state, handle)

    def _listener(self, state: PredictionState) -> Listener:
        """Mirror a running prediction's events into its state, as the replica reports them
        (no task per prediction: each event is handled where the replica reads it)."""

        def on_event(event: PredictionEvent | PredictionResult) -> None:
            if isinstance(event, PredictionResult):
                self.running.pop(state.id, None)
                state.files_dir = event.files_dir
                self._finish(state, event.status, event.output, event.error, event.metrics)
                self._pump()
            elif event.type == "started":
                state.mark_started()
                self.on_event(state, "started")
            elif event.type == "output":
                state.add_output(event.data)
                self.on_event(state, "output")
            elif event.type == "log":
                state.add_logs(event.data)
                self.on_event(state, "logs")

        return on_event

    def _finish(
        self,
        state: PredictionState,
        status: str,
        output: Any = None,
        error: str | None = None,
        metrics: dict[str, Any] | None = None,
    ) -> None:
        state.finish(status, output, error, metrics)
        self.on_event(state, "done")

    # -- shutdown -------------------------------------------------------------------------

    async def close(self, drain: bool = True) -> None:
        """Stop taking work; finish (drain) or cancel what runs; stop the replica."""
        self._closed = True
        if self._starting is not None:
            self._starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._starting
        if self.replica is not None:
            await self.replica.stop(drain=drain)
