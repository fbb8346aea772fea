"""`DeploymentRunner` against a fake `Runtime`: the branches that real processes reach only by
chance or by minutes of waiting — a replica lost mid-prediction (retry, or fail with the count),
one lost before starting it, a cancel racing a crash, the restart backoff after failed starts,
and the fall back from forking a warm host to full starts. The clock is the test's; the fake
replicas do exactly what each test tells them, when it tells them.

The same runner drives real replicas in tests/integration (test_faults, test_cold_start_tiers).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from ember.control.errors import QueueFull
from ember.control.policies.health import HealthStreaks
from ember.control.policies.restarts import MAX_BACKOFF_SECONDS, RestartBackoff, restart_backoff
from ember.control.policies.tiers import TierChoice
from ember.control.predictions import PredictionState
from ember.control.runner import DeploymentRunner
from ember.control.scaling import ScalingSettings
from ember.packages.spec import PackageSpec
from ember.runtime.base import (
    Listener,
    PredictionHandle,
    PredictionRequest,
    PredictionResult,
    Replica,
    ReplicaState,
    Runtime,
    Tier,
    TierStatus,
)

SPEC = PackageSpec(name="fake", format="ember", root="/nonexistent", predictor="p.py:P")


class FakeReplica(Replica):
    """A replica whose setup and predictions end when the test says."""

    def __init__(self, replica_id: str, tier: Tier) -> None:
        self.id = replica_id
        self.spec = SPEC
        self.tier = tier
        self.state = ReplicaState.STARTING
        self.max_concurrency = 1
        self.schema = None
        self.setup_logs = ""
        self.setup_error: str | None = None
        self.handles: dict[str, PredictionHandle] = {}
        self.canceled: list[str] = []
        self.health: str | None = None  # what its model's healthcheck answers
        self._started = asyncio.Event()
        self._stopped = asyncio.Event()

    @property
    def in_flight(self) -> int:
        return sum(not handle.done for handle in self.handles.values())

    def ready(self) -> None:
        self.state = ReplicaState.READY
        self._started.set()

    def fail_setup(self, error: str) -> None:
        self.state, self.setup_error = ReplicaState.SETUP_FAILED, error
        self._started.set()
        self._stopped.set()

    def crash(self, *, started: bool) -> None:
        """The process dies: what it had begun may run again, what it had not must."""
        self.state = ReplicaState.STOPPED
        for handle in list(self.handles.values()):
            if not handle.done:
                handle.finish(
                    PredictionResult(
                        handle.id,
                        "failed",
                        error="the replica exited with code -9",
                        never_started=not started,
                        retryable=started,
                    )
                )
        self._stopped.set()

    def succeed(self, prediction_id: str, output: Any = "ok") -> None:
        self.handles[prediction_id].finish(
            PredictionResult(prediction_id, "succeeded", output, metrics={"predict_time": 0.1})
        )

    async def wait_started(self) -> ReplicaState:
        await self._started.wait()
        return self.state

    async def wait_stopped(self) -> int | None:
        await self._stopped.wait()
        return 0

    def submit(
        self, request: PredictionRequest, listener: Listener | None = None
    ) -> PredictionHandle:
        if request.input.get("text") == "\ud800":  # as the worker's frame encoder refuses it
            raise UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed")
        handle = PredictionHandle(request, self.canceled.append, listener)
        self.handles[request.id] = handle
        return handle

    async def stop(self, drain: bool = True, timeout: float | None = None) -> None:
        self.state = ReplicaState.STOPPED
        self._stopped.set()

    async def healthcheck(self) -> str | None:
        return self.health


class FakeRuntime(Runtime):
    """Starts FakeReplicas; `setup` decides at once how each start ends (None: the test will)."""

    def __init__(self, setup: Callable[[FakeReplica], None] | None = FakeReplica.ready) -> None:
        self.setup = setup
        self.kept = Tier.COLD  # the tier it keeps ready (keep_ready's choice, set by the test)
        self.started: list[FakeReplica] = []
        self._ids = itertools.count(1)

    async def start(self) -> None:
        pass

    async def prepare(self, spec: PackageSpec, on_progress: Any = None) -> Any:
        return None

    async def start_replica(self, spec: PackageSpec, tier: Tier = Tier.WARM_HOST) -> Replica:
        replica = FakeReplica(f"r{next(self._ids)}", tier)
        self.started.append(replica)
        if self.setup is not None:
            self.setup(replica)
        return replica

    async def keep_ready(self, wanted: list[tuple[PackageSpec, Tier]]) -> None:
        pass

    def readiness(self, spec: PackageSpec) -> TierStatus:
        return TierStatus(self.kept, ready=True)

    async def close(self) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def prediction(n: int = 1) -> PredictionState:
    return PredictionState(f"p{n}", "ember", "ember/fake", "v1", {"text": "hi"})


async def settle() -> None:
    """Let the runner's background tasks (starts, stops) run to their next wait."""
    for _ in range(20):
        await asyncio.sleep(0)


def make_runner(
    runtime: FakeRuntime, clock: Clock, healthcheck_seconds: float = 0.0, **settings: Any
) -> tuple[DeploymentRunner, list[tuple[str, str]]]:
    """A runner on the test's clock; its control loop runs too (a wake ticks at once, as in
    production), and the test ticks it where a second would have passed."""
    events: list[tuple[str, str]] = []
    runner = DeploymentRunner(
        "fake",
        SPEC,
        runtime,
        on_event=lambda state, kind: events.append((state.id, kind)),
        settings=ScalingSettings(scale_down_delay=3600, idle_timeout=3600, **settings),
        clock=clock,
        healthcheck_seconds=healthcheck_seconds,
    )
    return runner, events


def in_event_loop(test: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    """Run an async test in a fresh event loop."""

    @functools.wraps(test)
    def run() -> None:
        asyncio.run(test())

    return run


# -- the restart schedule (pure) ----------------------------------------------------------------


def test_the_restart_backoff_is_exponential_and_capped() -> None:
    assert [restart_backoff(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 32, 60]
    assert restart_backoff(10_000) == MAX_BACKOFF_SECONDS


def test_one_good_start_resets_the_backoff() -> None:
    backoff = RestartBackoff()
    assert backoff.report(0.0) is None
    backoff.failed(10.0)
    backoff.failed(11.0)
    assert backoff.wait(11.5) == pytest.approx(1.5)
    assert backoff.report(11.5)["failed_starts"] == 2
    backoff.succeeded()
    assert backoff.report(11.5) is None


# -- retries after a lost replica -------------------------------------------------------------


@in_event_loop
async def test_a_prediction_lost_mid_run_runs_again_on_another_replica_and_says_so() -> None:
    runtime, clock = FakeRuntime(), Clock()
    runner, events = make_runner(runtime, clock, prediction_retries=1)
    state = prediction()
    runner.submit(state)
    runner.tick(clock.now)  # and the wake of the submit ticks too: still one start
    await settle()
    [first] = runtime.started
    assert "p1" in first.handles

    first.crash(started=True)
    runner.tick(clock.now)  # the lost replica is noticed; a new one starts
    await settle()
    second = runtime.started[1]
    assert "p1" in second.handles, "the prediction did not move to the new replica"
    assert state.retries == 1 and state.metrics["retries"] == 1
    assert "running it again on another replica (retry 1 of 1)" in state.logs
    assert "exited with code -9" in state.logs

    second.succeed("p1", "done")
    assert state.status == "succeeded" and state.output == "done"
    assert events[-1] == ("p1", "done")
    await runner.close()


@in_event_loop
async def test_a_prediction_lost_more_often_than_allowed_fails_with_the_count() -> None:
    runtime, clock = FakeRuntime(), Clock()
    runner, _ = make_runner(runtime, clock, prediction_retries=1)
    state = prediction()
    runner.submit(state)
    for replica_number in range(2):
        runner.tick(clock.now)
        await settle()
        runtime.started[replica_number].crash(started=True)
    assert state.status == "failed"
    assert state.error == (
        "the replica exited with code -9 (run 2 time(s); prediction_retries is 1)"
    )
    assert len(runtime.started) == 2
    await runner.close()


@in_event_loop
async def test_a_prediction_its_replica_never_began_runs_elsewhere_without_counting() -> None:
    runtime, clock = FakeRuntime(), Clock()
    runner, _ = make_runner(runtime, clock, prediction_retries=0)
    state = prediction()
    runner.submit(state)
    runner.tick(clock.now)
    await settle()
    runtime.started[0].crash(started=False)
    runner.tick(clock.now)
    await settle()
    runtime.started[1].succeed("p1")
    assert state.status == "succeeded" and state.retries == 0 and "again" not in state.logs
    await runner.close()


@in_event_loop
async def test_a_canceled_prediction_is_not_run_again_when_its_replica_dies() -> None:
    runtime, clock = FakeRuntime(), Clock()
    runner, _ = make_runner(runtime, clock, prediction_retries=3)
    state = prediction()
    runner.submit(state)
    runner.tick(clock.now)
    await settle()
    replica = runtime.started[0]
    assert runner.cancel(state)
    assert replica.canceled == ["p1"]
    replica.crash(started=True)  # before the cancel reached the model
    assert state.status == "canceled" and state.error is None and state.retries == 0
    await runner.close()


@in_event_loop
async def test_beyond_the_queue_limit_a_prediction_is_refused_and_recovery_is_not() -> None:
    runtime, clock = FakeRuntime(setup=None), Clock()
    runner, _ = make_runner(runtime, clock, queue_limit=2)
    runner.submit(prediction(1))
    runner.submit(prediction(2))
    with pytest.raises(QueueFull):
        runner.submit(prediction(3))
    runner.submit(prediction(4), force=True)  # taken back after a restart
    assert runner.counts()["queued"] == 3
    await runner.close()


# -- failed starts ----------------------------------------------------------------------------


@in_event_loop
async def test_a_model_that_fails_setup_is_restarted_ever_later_and_its_queue_fails() -> None:
    runtime = FakeRuntime(setup=lambda replica: replica.fail_setup("ImportError: no torch"))
    clock = Clock()
    runner, _ = make_runner(runtime, clock)
    runner.cold_start = TierChoice(Tier.COLD, "test")
    state = prediction()
    runner.submit(state)
    runner.tick(clock.now)
    await settle()
    # Nothing can serve it while the model cannot start: it fails with the reason at once.
    assert state.status == "failed"
    assert state.error == "the model failed to start: ImportError: no torch"
    status = runner.status()
    assert status["setup_error"] == "ImportError: no torch"
    assert status["restart_backoff"]["failed_starts"] == 1

    runner.submit(prediction(2))
    clock.now += 0.5
    decision = runner.tick(clock.now)  # inside the first second: no new start
    await settle()
    assert len(runtime.started) == 1
    assert decision.reason.startswith("waiting 0 s after a failed start")
    clock.now += 0.6
    runner.tick(clock.now)
    await settle()
    assert len(runtime.started) == 2
    assert runner.restarts.wait(clock.now) == pytest.approx(2.0)  # second failure: 2 s

    runtime.setup = FakeReplica.ready
    clock.now += 2.0
    runner.submit(prediction(3))
    runner.tick(clock.now)
    await settle()
    assert runner.status()["restart_backoff"] is None
    assert runner.status()["setup_error"] is None
    await runner.close()


@in_event_loop
async def test_a_failed_fork_from_the_warm_host_falls_back_to_full_starts() -> None:
    def setup(replica: FakeReplica) -> None:
        if replica.tier == Tier.WARM_HOST:
            replica.fail_setup("CUDA initialised before fork")
        else:
            replica.ready()

    runtime, clock = FakeRuntime(setup), Clock()
    runner, _ = make_runner(runtime, clock)
    runner.cold_start = TierChoice(Tier.WARM_HOST, "test")
    runtime.kept = Tier.WARM_HOST
    state = prediction()
    runner.submit(state)
    runner.tick(clock.now)
    await settle()
    # The failed fork is not held against the model: no backoff, nothing failed, and the
    # next start (at once) is a full one.
    assert [r.tier for r in runtime.started] == [Tier.WARM_HOST, Tier.DISK]
    assert state.status != "failed" and runner.status()["restart_backoff"] is None
    cold_start = runner.status()["cold_start"]
    assert cold_start["tier"] == "warm-host" and cold_start["ready"] is False
    assert "start in full" in cold_start["detail"]
    runtime.started[1].succeed("p1")
    assert state.status == "succeeded"
    await runner.close()


@in_event_loop
async def test_a_prediction_that_cannot_be_sent_fails_and_does_not_block_the_queue() -> None:
    runtime, clock = FakeRuntime(), Clock()
    runner, _ = make_runner(runtime, clock, min_instances=1)
    runner.tick(clock.now)
    await settle()
    (replica,) = runtime.started
    poison, after = prediction(1), prediction(2)
    poison.input = {"text": "\ud800"}
    runner.submit(poison)
    runner.submit(after)
    assert poison.status == "failed"
    assert "could not hand this prediction to a replica" in (poison.error or "")
    assert "p2" in replica.handles  # the next one runs at once
    replica.succeed("p2")
    await settle()
    assert after.status == "succeeded"
    await runner.close()


@in_event_loop
async def test_a_prediction_goes_to_the_least_busy_ready_replica() -> None:
    runtime, clock = FakeRuntime(), Clock()
    runner, _ = make_runner(runtime, clock, min_instances=2, max_instances=2)
    runner.tick(clock.now)
    await settle()
    first, second = runtime.started
    for n in range(1, 4):
        runner.submit(prediction(n))
    # One running and one prefetched per replica, in turn; the third waits for a slot.
    assert (set(first.handles), set(second.handles)) == ({"p1", "p3"}, {"p2"})
    first.succeed("p1")
    second.succeed("p2")
    runner.submit(prediction(4))
    assert "p4" in second.handles
    await runner.close()


# -- the model's own healthcheck ----------------------------------------------------------------


def test_three_failed_checks_in_a_row_replace_a_replica_and_one_good_resets() -> None:
    streaks = HealthStreaks(interval=30, failures_to_replace=3)
    assert not streaks.round_due(0.0)  # the clock starts: the worker just checked once
    assert not streaks.round_due(29.9)
    assert streaks.round_due(30.0) and not streaks.round_due(31.0)
    assert not streaks.record("r1", "returned False")
    assert not streaks.record("r1", "returned False")
    assert streaks.report() == {"r1": {"failures": 2, "error": "returned False"}}
    assert not streaks.record("r1", None)  # a good answer: the count starts again
    assert streaks.report() == {}
    assert [streaks.record("r1", "timed out") for _ in range(3)] == [False, False, True]
    streaks.forget(alive={"r2"})
    assert streaks.report() == {}
    never = HealthStreaks(interval=0)  # 0: never checked periodically
    assert not never.round_due(0.0) and not never.round_due(1e9)


@in_event_loop
async def test_a_replica_failing_its_healthcheck_is_drained_and_replaced() -> None:
    runtime, clock = FakeRuntime(), Clock()
    runner, _ = make_runner(runtime, clock, healthcheck_seconds=10, min_instances=1)
    runner.tick(clock.now)
    await settle()
    (sick,) = runtime.started
    sick.health = "Healthcheck failed: user-defined healthcheck returned False"
    assert runner.status()["unhealthy"] == {}  # it passed once set up (startup_health None)
    for _ in range(5):  # asked for (Cog's health-check, polled): answered, never counted
        assert await runner.healthcheck() == sick.health
    assert runner.status()["unhealthy"] == {}
    for round_number in range(1, 3):
        clock.now += 10
        runner.tick(clock.now)
        await settle()
        assert runner.status()["unhealthy"][sick.id]["failures"] == round_number
    assert sick.state == ReplicaState.READY  # two failures are not yet enough
    clock.now += 10
    runner.tick(clock.now)
    await settle()
    assert sick.state == ReplicaState.STOPPED
    runner.tick(clock.now)
    await settle()
    replacement = runtime.started[-1]
    assert replacement is not sick and runner.replicas == [replacement]
    assert runner.status()["unhealthy"] == {}
    await runner.close()


@in_event_loop
async def test_a_failed_check_once_set_up_counts_as_the_first_failure() -> None:
    def unwell(replica: FakeReplica) -> None:
        replica.startup_health = "Healthcheck failed: RuntimeError: no GPU"
        replica.ready()

    runtime, clock = FakeRuntime(setup=unwell), Clock()
    runner, _ = make_runner(runtime, clock, healthcheck_seconds=10, min_instances=1)
    runner.tick(clock.now)
    await settle()
    (replica,) = runtime.started
    assert replica.state == ReplicaState.READY  # served, as Cog serves it
    assert runner.status()["unhealthy"] == {
        replica.id: {"failures": 1, "error": "Healthcheck failed: RuntimeError: no GPU"}
    }
    await runner.close()
