"""Runs one deployment: a FIFO of accepted predictions, the replicas that serve them, and the
control loop that decides how many replicas there should be.

- Requests wait here, in order, instead of being refused (Cog answers 409). At zero replicas
  the first request starts one at once (Knative's activator); beyond `queue_limit` waiting
  requests, `submit` raises QueueFull (the API answers 429 with Retry-After).
- Each prediction goes to the ready replica with the fewest outstanding predictions.
- A replica that goes away (killed, crashed, frozen without heartbeat, its node lost) takes
  nothing accepted with it: what it had not started runs on another replica; what it had
  started but not shown output of runs again up to `prediction_retries` times, with a note in
  its logs and `metrics.retries`; the rest fails with the reason. A replica preempted (SIGTERM)
  drains: it is no longer counted, so a replacement starts while it finishes what it runs.
- A ready replica's model is asked whether it is well (its own healthcheck) every 30 s;
  after 3 failed checks in a row it is drained and replaced (`health_watch.py`).
- A replica that fails to start is restarted after 1 s, 2 s, 4 s ... up to a minute
  (`policies/restarts.py`), the wait reported in the status (`restart_backoff`) beside
  `setup_error`.
- Every tick (and at once when a request finds no replica), the pure policy in
  `policies/autoscaling.py` turns the observed demand into a replica count; scale-in drains
  (the replica takes nothing new and finishes what it holds).
- Every replica's life is metered (`policies/billing.py`, `replica_meters.py`): its
  starting, busy, idle and draining seconds at its hardware's rate; each prediction gets its
  cost (its share of busy time plus its share of the cold start it waited for) in its metrics
  before it finishes.
- Everything the runner learns is reported through `on_event` and `on_replica_event`: it knows
  nothing of storage or HTTP.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime
import logging
import time
from collections.abc import Callable
from typing import Any

from ember.control import runner_status
from ember.control.errors import QueueFull
from ember.control.health_watch import HealthWatch
from ember.control.policies.autoscaling import Autoscaler, Decision, Limits, Observation
from ember.control.policies.billing import ReplicaMeter
from ember.control.policies.costs import StartTimes
from ember.control.policies.health import CHECK_INTERVAL_SECONDS, HealthStreaks
from ember.control.policies.keepalive import IdleHistory
from ember.control.policies.restarts import RestartBackoff
from ember.control.policies.tiers import TierChoice
from ember.control.predictions import PredictionState, utcnow
from ember.control.replica_meters import ReplicaMeters
from ember.control.scaling import DEFAULT_IDLE_TIMEOUT, ScalingSettings, keep_warm_floor
from ember.packages.spec import PackageSpec
from ember.runtime.base import (
    PREDICT,
    Listener,
    PredictionEvent,
    PredictionHandle,
    PredictionRequest,
    PredictionResult,
    Replica,
    ReplicaState,
    ReplicaUnavailable,
    Runtime,
    Tier,
)
from ember.tasks import cancel_and_wait

logger = logging.getLogger("ember.control")
PREFETCH = 1
TICK_SECONDS = 1.0

# (prediction, event) with event in: started, output, logs, done
OnEvent = Callable[[PredictionState, str], None]
ResolveInput = Callable[[dict[str, Any]], dict[str, Any]]
ALIVE = (ReplicaState.STARTING, ReplicaState.READY)
# (deployment, kind, data): kind "scale" {direction, count}, "start" {tier, ok, phases},
# "first_prediction" {tier, seconds}, "usage" {replica, hardware, tier, meter, final} or
# "unhealthy" {replica, why}
OnReplicaEvent = Callable[[str, str, dict[str, Any]], None]


def replica_ready(replica: Replica | None) -> bool:
    return replica is not None and replica.state == ReplicaState.READY


class DeploymentRunner:
    def __init__(
        self,
        name: str,
        spec: PackageSpec,
        runtime: Runtime,
        on_event: OnEvent,
        resolve_input: ResolveInput = lambda value: value,
        settings: ScalingSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime.datetime] = utcnow,
        on_replica_event: OnReplicaEvent = lambda deployment, kind, data: None,
        hardware: str = "cpu",
        rate: Callable[[str], float] = lambda hardware: 0.0,
        healthcheck_seconds: float = CHECK_INTERVAL_SECONDS,
    ) -> None:
        self.name = name
        self.hardware = hardware  # changes live with the deployment's release
        self.rate = rate  # dollars per second of a replica of a hardware SKU, as priced now
        self.spec = spec
        self.runtime = runtime
        self.on_event = on_event
        self.resolve_input = resolve_input
        self.settings = settings or ScalingSettings()
        self.clock = clock
        self.wall = wall  # keep-warm windows are read on it
        self.on_replica_event = on_replica_event
        self.queue: collections.deque[PredictionState] = collections.deque()
        self.replicas: list[Replica] = []
        self.running: dict[str, tuple[PredictionState, PredictionHandle]] = {}
        self.autoscaler = Autoscaler()
        self.history = IdleHistory()  # learned per deployment: idle gaps before requests
        self.start_times = StartTimes()  # measured per tier: what the next start will cost
        self._canceled: set[str] = set()  # running ones asked to stop: never re-queued
        self._idle_since: float | None = None
        self.last_active = clock()  # deployed, or last given a prediction (tier choice)
        self.cold_start = TierChoice(Tier.COLD, "not chosen yet")  # set by the platform
        self._unproven: set[str] = set()  # replicas that have not finished a prediction yet
        # A forked replica failed to set up (e.g. CUDA initialised in the host by an import):
        # from then on replicas start in full, without the warm host.
        self.fork_failed = False
        self.meters = ReplicaMeters(
            clock, lambda data: self.on_replica_event(self.name, "usage", data)
        )
        self.last_decision = Decision(0, "not started")
        self.last_setup_error: str | None = None
        # The last replica that ended of its own (out of memory, a crash), for the status.
        self.last_failure: dict[str, str] | None = None
        self._pending_starts = 0
        self.restarts = RestartBackoff()
        self.health = HealthWatch(
            name, self._replace_unhealthy, HealthStreaks(interval=healthcheck_seconds)
        )
        self._background: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None
        self._closed = False

    # -- intake -------------------------------------------------------------------------

    def submit(self, state: PredictionState, force: bool = False) -> None:
        """Accept a prediction; it runs when a replica slot is free. `force` skips the queue
        limit (recovery after a restart must take back everything it had accepted)."""
        if not force and len(self.queue) >= self.settings.queue_limit:
            raise QueueFull(self.name, self.settings.queue_limit)
        now = self.clock()
        self.last_active = now
        if state.accepted_clock is None:
            state.accepted_clock = now
        if self._idle_since is not None and not self.outstanding:
            self.history.record(max(0.0, now - self._idle_since))
            self._idle_since = None
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
            self._canceled.add(state.id)  # whatever comes back, it must not run again
            running[1].cancel()
            return True
        return False

    @property
    def outstanding(self) -> int:
        return len(self.queue) + len(self.running)

    def counts(self) -> dict[str, Any]:
        """Replicas by state, queued and running: what is cheap to read every few seconds."""
        states = collections.Counter(r.state.value.lower() for r in self.replicas)
        return {
            "replicas": {
                "starting": states["starting"] + self._pending_starts,
                "ready": states["ready"],
            },
            "queued": len(self.queue),
            "running": len(self.running),
        }

    def status(self) -> dict[str, Any]:
        """Replicas by state, queue and the last scaling decision (for the API and `ember ls`)."""
        return runner_status.report(self)

    def update_settings(self, settings: ScalingSettings) -> None:
        """Change scaling live: the next tick (now) applies it."""
        self.settings = settings
        self.wake()

    # -- routing ------------------------------------------------------------------------

    def _route(self) -> Replica | None:
        """The ready replica with the fewest outstanding predictions and a free slot (plus one
        queued inside the worker, so it starts its next prediction without a round trip)."""
        best: Replica | None = None
        for replica in self.replicas:
            if replica.state != ReplicaState.READY:
                continue
            if replica.in_flight >= replica.max_concurrency + PREFETCH:
                continue
            if best is None or replica.in_flight < best.in_flight:
                best = replica
        return best

    def _pump(self) -> None:
        """Hand waiting predictions to replicas while they have free slots."""
        while self.queue:
            replica = self._route()
            if replica is None:
                if not self._alive():
                    self.wake()  # a request at zero replicas: decide now, not at the next tick
                return
            state = self.queue.popleft()
            try:
                handle = replica.submit(
                    PredictionRequest(
                        id=state.id,
                        # An OpenAI body holds text, not links to uploaded files.
                        input=(
                            self.resolve_input(state.input)
                            if state.method == PREDICT
                            else state.input
                        ),
                        context=state.context,
                        timeout=self.settings.request_timeout or self.spec.timeout,
                        method=state.method,
                    ),
                    self._listener(state, replica),
                )
            except ReplicaUnavailable:  # the replica is going away: keep the prediction
                self.queue.appendleft(state)
                self.wake()
                return
            except Exception as exc:  # it cannot be sent at all: never let it block the queue
                logger.exception("%s: handing %s to a replica failed", self.name, state.id)
                self._finish(
                    state,
                    "failed",
                    error=f"Ember could not hand this prediction to a replica, so it never ran "
                    f"({type(exc).__name__}: {exc})",
                )
                continue
            self.running[state.id] = (state, handle)

    def _listener(self, state: PredictionState, replica: Replica) -> Listener:
        """Mirror a running prediction's events into its state, as the replica reports them
        (no task per prediction: each event is handled where the replica reads it)."""

        meter = self.meters.get(replica.id)

        def on_event(event: PredictionEvent | PredictionResult) -> None:
            if isinstance(event, PredictionResult):
                self.running.pop(state.id, None)
                if meter is not None:
                    charge = meter.finished(state.id, self.clock())
                    if not event.never_started:
                        event.metrics["cost"] = charge.total
                        event.metrics["cold_start_cost"] = charge.cold_start_cost
                if replica.id in self._unproven and "predict_time" in event.metrics:
                    self._unproven.discard(replica.id)  # the last phase of its start
                    self.on_replica_event(
                        self.name,
                        "first_prediction",
                        {
                            "replica": replica.id,
                            "tier": replica.tier.value,
                            "seconds": event.metrics["predict_time"],
                        },
                    )
                canceled = state.id in self._canceled
                self._canceled.discard(state.id)
                if canceled and event.status != "succeeded":
                    # Its replica died, or handed it back, before the cancel took effect.
                    event.status, event.error = "canceled", None
                retry = event.retryable and state.retries < self.settings.prediction_retries
                if (event.never_started or retry) and not self._closed and not canceled:
                    # Its replica went away before starting it, or before it produced any
                    # output: run it on another.
                    if retry:
                        self._note_retry(state, event.error)
                    self.queue.appendleft(state)
                    self.wake()  # replace the lost replica
                    self._pump()  # and meanwhile use another that is ready, if any
                    return
                if event.retryable and not retry and event.error:
                    event.error += (
                        f" (run {state.retries + 1} time(s); "
                        f"prediction_retries is {self.settings.prediction_retries})"
                    )
                if not self.outstanding:
                    self._idle_since = self.clock()
                state.files_dir = event.files_dir
                state.validation = event.validation_errors
                self._finish(state, event.status, event.output, event.error, event.metrics)
                self._pump()
            elif event.type == "started":
                now = self.clock()
                accepted = state.accepted_clock if state.accepted_clock is not None else now
                state.metrics["queue_time"] = max(0.0, now - accepted)
                if meter is not None:
                    meter.started(state.id, now, accepted)
                state.mark_started()
                self.on_event(state, "started")
            elif event.type == "output":
                state.add_output(event.data)
                self.on_event(state, "output")
            elif event.type == "log":
                state.add_logs(event.data)
                self.on_event(state, "logs")
            elif event.type == "metric":
                state.add_metric(event.data)

        return on_event

    def _note_retry(self, state: PredictionState, error: str | None) -> None:
        """Say in the prediction's logs and metrics that it runs again, and why: its first
        run's logs stay above the note, the next run's come below."""
        error = state.scrubbed(error) if error else error
        logger.warning("%s: %s: %s; running it again", self.name, state.id, error)
        reason = error or "its replica went away"
        state.run_again(reason, self.settings.prediction_retries, " on another replica")
        self.on_event(state, "logs")

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

    # -- the control loop -------------------------------------------------------------------

    def start(self) -> None:
        """Begin deciding replica counts (min_instances and keep-warm apply from now)."""
        if self._loop is None:
            self._loop = asyncio.create_task(self._control_loop())

    def wake(self) -> None:
        self._wake.set()
        self.start()

    async def _control_loop(self) -> None:
        while not self._closed:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TICK_SECONDS):
                    await self._wake.wait()
            self._wake.clear()
            if self._closed:
                return
            try:
                self.tick(self.clock())
            except Exception:
                logger.exception("%s: scaling decision failed", self.name)

    def _alive(self) -> list[Replica]:
        for replica in self.replicas:
            if replica.state == ReplicaState.DRAINING:  # preempted: it drains by itself
                self._retire(replica)
            elif replica.state not in ALIVE and replica.failure:
                self.last_failure = {
                    "replica": replica.id,
                    "reason": replica.failure,
                    "at": self.wall().isoformat(),
                }
                logger.warning("%s: replica %s ended: %s", self.name, replica.id, replica.failure)
        self.replicas = [r for r in self.replicas if r.state in ALIVE]
        if self._unproven:
            self._unproven.intersection_update(r.id for r in self.replicas)
        return self.replicas

    def _start_tier(self) -> Tier:
        """The fastest tier this deployment's replicas may start from."""
        if self.fork_failed and self.cold_start.tier == Tier.WARM_HOST:
            return Tier.DISK
        return self.cold_start.tier

    def start_seconds(self) -> float | None:
        """What a start from the tier kept ready takes, as measured (None before one was)."""
        return self.start_times.get(self._start_tier().value)

    def limits(self, now: float, now_wall: datetime.datetime | None = None) -> Limits:
        """The policy's bounds now: floors from min_instances, keep-warm windows and the
        learned pre-warm window; the keep-alive from `idle_timeout` or the learned windows."""
        settings = self.settings
        moment = now_wall or self.wall()
        slots = next((r.max_concurrency for r in self.replicas), self.spec.max_concurrency)
        floor = max(settings.min_instances, keep_warm_floor(settings.windows, moment))
        scale_out: float | None = None
        if settings.idle_timeout is not None:
            keepalive = settings.idle_timeout
        else:
            start = self.start_seconds()
            if start is not None:  # a waiting request is seen at the next tick, then waits
                scale_out = start + TICK_SECONDS / 2
            windows = self.history.windows(DEFAULT_IDLE_TIMEOUT, start)
            if windows.prewarm > 0:
                # Unload after each burst; be warm again just before the next is expected.
                keepalive = 0.0
                if windows.warm_at(self.autoscaler.idle_for(now)):
                    floor = max(floor, 1)
            else:
                keepalive = windows.keepalive
        return Limits(
            floor=min(floor, settings.max_instances),
            ceiling=settings.max_instances,
            target=float(settings.target_concurrency or slots),
            scale_up_delay=settings.scale_up_delay,
            scale_down_delay=settings.scale_down_delay,
            keepalive=keepalive,
            scale_out_seconds=scale_out,
        )

    def tick(self, now: float) -> Decision:
        """Observe, decide, and start or drain replicas to match."""
        alive = self._alive()
        self.autoscaler.observe(
            Observation(
                now,
                len(self.running),
                len(self.queue),
                len(alive) + self._pending_starts,
                self._idle_since,
            )
        )
        self.health.tick(now, alive)
        decision = self.autoscaler.decide(now, self.limits(now))
        self.last_decision = decision
        have = len(alive) + self._pending_starts
        if decision.replicas > have and (wait := self.restarts.wait(now)):
            decision = Decision(have, f"waiting {wait:.0f} s after a failed start")
            self.last_decision = decision
        if decision.replicas > have:
            self.on_replica_event(
                self.name, "scale", {"direction": "up", "count": decision.replicas - have}
            )
            for _ in range(decision.replicas - have):
                # Counted now, not when the task first runs: a tick before then must not
                # start the same replica again.
                self._pending_starts += 1
                self._spawn(self._start_replica())
        if decision.replicas < have:
            self.on_replica_event(
                self.name, "scale", {"direction": "down", "count": have - decision.replicas}
            )
            self._drain(have - decision.replicas)
        return decision

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _start_replica(self) -> None:
        """One replica asked for by `tick` (already counted in `_pending_starts`)."""
        replica: Replica | None = None
        began = time.perf_counter()
        meter = ReplicaMeter(self.rate(self.hardware), self.clock())
        try:
            replica = await self.runtime.start_replica(self.spec, self._start_tier())
            self.meters.add(replica, meter, self.hardware)
            self._spawn(self.meters.account(replica))
            if self._closed:
                await replica.stop(drain=False)
                return
            self.replicas.append(replica)
        except Exception as exc:  # environment build, spawn failures
            self.last_setup_error = str(exc)
            logger.exception("%s: cannot start a replica", self.name)
        finally:
            self._pending_starts -= 1
        if replica is not None:
            state = await replica.wait_started()
            phases = {
                **replica.start_phases(),
                "ready": time.perf_counter() - began,
            }
            self.on_replica_event(
                self.name,
                "start",
                {
                    "replica": replica.id,
                    "tier": replica.tier.value,
                    "ok": state == ReplicaState.READY,
                    "phases": phases,
                },
            )
            if state == ReplicaState.READY:
                starting = sum(r.state == ReplicaState.STARTING for r in self.replicas)
                meter.ready(self.clock(), len(self.queue), starting + self._pending_starts + 1)
                # What the next start from this tier will cost (not the wait for a warm host
                # that was still starting: that happens once).
                seconds = phases["ready"] - phases.get("host_wait", 0.0)
                self.start_times.record(replica.tier.value, max(0.0, seconds))
                self._unproven.add(replica.id)
                self.health.started(replica)
                self.last_setup_error = None
                self.restarts.succeeded()
            elif self._closed or state == ReplicaState.DRAINING:
                return  # stopped on purpose while starting: not a failure of the model
            elif replica.lost:  # its node went away: start another, nothing to hold against it
                logger.warning("%s: replica %s was lost while starting", self.name, replica.id)
                self.wake()
                return
            elif replica.tier == Tier.WARM_HOST and not self.fork_failed:
                # Maybe only the fork is at fault: one full start decides before it counts.
                self.fork_failed = True
                logger.warning(
                    "%s: a replica forked from the warm host failed to set up; starting in "
                    "full from now on:\n%s",
                    self.name,
                    replica.setup_error,
                )
                self.wake()
                return
            else:
                self.last_setup_error = replica.setup_error or f"replica ended {state.value}"
                logger.error("%s: replica failed to start:\n%s", self.name, self.last_setup_error)
        if self.last_setup_error and not replica_ready(replica):
            self.restarts.failed(self.clock())
        if self._closed:
            return
        if not self._alive() and not self._pending_starts and self.last_setup_error:
            self._fail_queue(f"the model failed to start: {self.last_setup_error}")
        self._pump()

    def _drain(self, count: int) -> None:
        """Stop `count` replicas, the least busy first; in-flight predictions finish."""
        victims = sorted(self.replicas, key=lambda r: (r.state == ReplicaState.READY, r.in_flight))
        for replica in victims[:count]:
            self.replicas.remove(replica)
            self._retire(replica)

    def _replace_unhealthy(self, replica: Replica, reason: str) -> None:
        """Drain a replica its model calls unwell; the next tick starts its replacement."""
        if replica in self.replicas:
            self.replicas.remove(replica)
            self.on_replica_event(self.name, "unhealthy", {"replica": replica.id, "why": reason})
            self._retire(replica)
            self.wake()

    async def healthcheck(self) -> str | None:
        """The model's own healthcheck on the least busy ready replica (None: healthy, or no
        replica is ready to ask); asked for, it does not count toward replacing one."""
        ready = [r for r in self.replicas if r.state == ReplicaState.READY]
        if not ready:
            return None
        return await min(ready, key=lambda r: r.in_flight).healthcheck()

    def _retire(self, replica: Replica) -> None:
        """Bill the replica as draining and stop it once its in-flight predictions finish
        (`close` waits for that)."""
        self.meters.draining(replica.id)
        self._spawn(replica.stop(drain=True))

    def _fail_queue(self, reason: str) -> None:
        while self.queue:
            self._finish(self.queue.popleft(), "failed", error=reason)

    # -- shutdown -------------------------------------------------------------------------

    async def close(self, drain: bool = True) -> None:
        """Stop deciding; finish (drain) or cut what runs; stop every replica."""
        self._closed = True
        self._wake.set()
        await cancel_and_wait(self._loop)
        await self.health.close()
        replicas, self.replicas = self.replicas, []
        await asyncio.gather(*(r.stop(drain=drain) for r in replicas))
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
