"""A replica must report every failure of the code it runs, and never lose a prediction: a
crash, a freeze (no heartbeat) and a preemption notice (SIGTERM) included."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import pytest

from ember.packages.loader import read_package
from ember.packages.spec import PackageSpec
from ember.runtime.base import PredictionRequest, ReplicaState, ReplicaUnavailable, Tier
from ember.runtime.local import LocalRuntime
from tests.support.paths import model_path
from tests.support.replicas import hosted, predict, run_once, start

SYNC = model_path("faults", "sync")
ASYNC = model_path("faults", "async")
STEPS = model_path("faults", "steps")


@pytest.fixture
def quick_runtime(ember_home):
    """Hung predictions are declared hung half a second after their timeout."""
    return LocalRuntime(ember_home, hang_grace=0.5)


def test_raising_predictor_fails_with_error_text_and_logs(runtime):
    run = run_once(runtime, SYNC, input={"mode": "raise"})
    assert run.result.status == "failed"
    assert run.result.error == "the model exploded"
    assert "about to fail" in run.result.logs
    assert "Traceback" in run.result.logs and "ValueError" in run.result.logs


def test_setup_that_raises_is_setup_failed_with_traceback_and_logs(runtime):
    async def go():
        replica = await runtime.start_replica(read_package(model_path("faults", "setup-raises")))
        assert await replica.wait_started() == ReplicaState.SETUP_FAILED
        assert "RuntimeError: weights file is corrupt" in replica.setup_error
        assert "Traceback" in replica.setup_error
        assert "loading weights..." in replica.setup_logs
        assert await replica.wait_stopped() == 1

    asyncio.run(go())


def test_import_error_is_setup_failed(runtime):
    async def go():
        replica = await runtime.start_replica(read_package(model_path("faults", "import-error")))
        assert await replica.wait_started() == ReplicaState.SETUP_FAILED
        assert "No module named 'module_that_does_not_exist'" in replica.setup_error

    asyncio.run(go())


def test_process_exit_during_setup_is_reported(runtime):
    async def go():
        replica = await runtime.start_replica(read_package(model_path("faults", "setup-exits")))
        assert await replica.wait_started() == ReplicaState.SETUP_FAILED
        assert "exited with code 7 during setup" in replica.setup_error

    asyncio.run(go())


def test_timeout_interrupts_a_sleeping_sync_predictor_and_replica_survives(runtime):
    async def go():
        replica = await start(runtime, SYNC)
        try:
            slow = await predict(
                replica, "slow", input={"mode": "sleep", "seconds": 30}, timeout=0.5
            )
            assert slow.result.status == "failed"
            assert slow.result.error == "prediction timed out after 0.5 s"
            after = await predict(replica, "after", input={"mode": "ok"})
            assert after.result.status == "succeeded"
            assert replica.state == ReplicaState.READY
        finally:
            await replica.stop()

    asyncio.run(go())


def test_predictor_that_ignores_interruption_gets_its_replica_killed(quick_runtime):
    async def go():
        replica = await start(quick_runtime, SYNC)
        run = await predict(
            replica, "stubborn", input={"mode": "ignore-cancel", "seconds": 60}, timeout=0.5
        )
        assert run.result.status == "failed"
        assert "timed out after 0.5 s and did not stop" in run.result.error
        await replica.wait_stopped()
        assert replica.state == ReplicaState.STOPPED

    asyncio.run(go())


def test_crash_mid_prediction_fails_it_with_the_reason(runtime):
    async def go():
        replica = await start(runtime, SYNC)
        queued = replica.submit(PredictionRequest(id="queued", input={"mode": "ok"}))
        crashed = await predict(replica, "crash", input={"mode": "crash"})
        # The crash is reported, and so is the prediction queued behind it: nothing hangs.
        assert crashed.result.status == "failed"
        assert "exited with code -9" in crashed.result.error
        # It showed nothing: the control plane may run it again; the other never started.
        assert crashed.result.retryable and not crashed.result.never_started
        queued_result = await queued.result()
        assert queued_result.status in ("succeeded", "failed")
        assert queued_result.never_started or queued_result.status == "succeeded"
        assert replica.state == ReplicaState.STOPPED
        assert not replica.scratch_dir.exists()  # its temp files went with it

    asyncio.run(go())


def test_cancel_running_sync_prediction(runtime):
    async def go():
        replica = await start(runtime, SYNC)
        try:
            handle = replica.submit(
                PredictionRequest(id="long", input={"mode": "sleep", "seconds": 30})
            )
            queued = replica.submit(PredictionRequest(id="queued", input={"mode": "ok"}))
            async for event in handle.events():
                if event.type == "started":
                    queued.cancel()
                    handle.cancel()
            assert (await handle.result()).status == "canceled"
            queued_result = await queued.result()
            assert queued_result.status == "canceled" and queued_result.started_at is None
            assert (await predict(replica, "next", input={"mode": "ok"})).result.output == "ok"
        finally:
            await replica.stop()

    asyncio.run(go())


def test_cancel_and_timeout_of_async_predictions(runtime):
    async def go():
        replica = await start(runtime, ASYNC)
        try:
            handle = replica.submit(PredictionRequest(id="a", input={"seconds": 30}))
            async for event in handle.events():
                if event.type == "started":
                    handle.cancel()
            result = await handle.result()
            assert result.status == "canceled"
            assert "cancelled cleanly" in result.logs
            timed = await predict(replica, "t", input={"seconds": 30}, timeout=0.3)
            assert timed.result.error == "prediction timed out after 0.3 s"
            failed = await predict(replica, "f", input={"mode": "raise"})
            assert failed.result.error == "async failure"
        finally:
            await replica.stop()

    asyncio.run(go())


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("thread-log", "hello from a thread"),
        ("fd-log", "raw bytes on fd 1\nraw bytes on fd 2"),
        ("stderr", "to stderr"),
    ],
)
def test_logs_are_captured_from_threads_and_file_descriptors(runtime, mode, expected):
    run = run_once(runtime, SYNC, input={"mode": mode})
    assert run.result.status == "succeeded"
    for line in expected.split("\n"):
        assert line in run.result.logs


def test_drain_finishes_in_flight_predictions_before_stopping(runtime):
    async def go():
        replica = await start(runtime, SYNC)
        handle = replica.submit(PredictionRequest(id="d", input={"mode": "sleep", "seconds": 0.5}))
        await replica.stop(drain=True)
        assert (await handle.result()).status == "succeeded"
        assert replica.state == ReplicaState.STOPPED
        assert replica.exit_code == 0

    asyncio.run(go())


THREADS = model_path("faults", "threads")


def test_cancel_and_timeout_stop_synchronous_predictors_on_threads(runtime):
    """With concurrency > 1 a sync predict() runs on a pool thread: cancel and timeout must
    stop that thread, not only stop waiting for it."""

    async def go():
        replica = await start(runtime, THREADS)
        try:
            handle = replica.submit(PredictionRequest(id="c", input={"seconds": 30}))
            async for event in handle.events():
                if event.type == "started":
                    await asyncio.sleep(0.2)
                    handle.cancel()
            canceled = await handle.result()
            assert canceled.status == "canceled"
            assert "stopped after" in canceled.logs  # the thread itself ended
            timed = await predict(replica, "t", input={"seconds": 30}, timeout=0.5)
            assert timed.result.error == "prediction timed out after 0.5 s"
            assert "stopped after" in timed.result.logs
            ok = await predict(replica, "ok", input={"seconds": 0.1})
            assert ok.result.output == "done"
        finally:
            await replica.stop()

    asyncio.run(go())


def test_a_crash_after_output_is_failed_and_not_retryable(runtime):
    async def go():
        replica = await start(runtime, STEPS)
        handle = replica.submit(PredictionRequest(id="s", input={"outputs": 1, "seconds": 30}))
        async for event in handle.events():
            if event.type == "output":
                os.kill(replica.pid, signal.SIGKILL)
        result = await handle.result()
        assert result.status == "failed" and not result.retryable
        assert "exited with code -9" in result.error
        assert "already produced output, so it cannot be run again" in result.error

    asyncio.run(go())


def test_a_frozen_replica_is_killed_and_its_prediction_may_run_elsewhere(ember_home):
    """SIGSTOP freezes every thread, the heartbeat's too: the replica is killed once it has been
    silent for heartbeat_timeout."""

    async def go():
        replica = await start(LocalRuntime(ember_home, heartbeat_timeout=1), STEPS)
        handle = replica.submit(PredictionRequest(id="f", input={"seconds": 30}))
        async for event in handle.events():
            if event.type == "started":
                os.kill(replica.pid, signal.SIGSTOP)
        result = await handle.result()
        assert result.status == "failed" and result.retryable
        assert result.error == "replica stopped responding (no heartbeat for 1 s)"
        assert await replica.wait_stopped() == -signal.SIGKILL

    asyncio.run(go())


def test_a_busy_forked_replica_keeps_heartbeating(ember_home):
    """A predict() spinning in Python on the main thread does not silence the heartbeat, nor
    does being forked from a warm host (the fork keeps only the forking thread)."""
    runtime = LocalRuntime(ember_home, heartbeat_timeout=0.6)

    async def scenario(spec: PackageSpec) -> None:
        replica = await start(runtime, spec)
        assert replica.tier == Tier.WARM_HOST
        run = await predict(replica, "busy", input={"mode": "busy-loop", "seconds": 2})
        assert run.result.status == "succeeded", run.result.error
        await replica.stop()

    hosted(runtime, scenario, read_package(SYNC))


PREEMPTED = [
    # (model, input of each prediction, predictions that run at once)
    pytest.param(SYNC, {"mode": "sleep", "seconds": 1}, 1, id="serial"),
    pytest.param(ASYNC, {"seconds": 1}, 2, id="concurrent"),
]


@pytest.mark.parametrize(("path", "payload", "slots"), PREEMPTED)
def test_sigterm_drains_the_replica_and_hands_back_what_it_had_not_started(
    runtime: LocalRuntime, path: Any, payload: dict, slots: int
) -> None:
    """A spot machine's preemption notice: what runs finishes, what waited in the worker comes
    back unstarted (to run elsewhere), nothing new is taken, and the worker exits cleanly."""

    async def go():
        replica = await start(runtime, path)
        handles = [
            replica.submit(PredictionRequest(id=f"p{i}", input=payload)) for i in range(slots + 1)
        ]
        async for event in handles[0].events():
            if event.type == "started":
                os.kill(replica.pid, signal.SIGTERM)
        results = [await handle.result() for handle in handles]
        assert [r.status for r in results[:slots]] == ["succeeded"] * slots
        waiting = results[slots]
        assert waiting.never_started and "preempted" in waiting.error
        assert replica.state in (ReplicaState.DRAINING, ReplicaState.STOPPED)
        with pytest.raises(ReplicaUnavailable):
            replica.submit(PredictionRequest(id="late", input=payload))
        assert await replica.wait_stopped() == 0

    asyncio.run(go())


def test_sigterm_to_every_process_lets_a_forked_replica_finish(runtime: LocalRuntime) -> None:
    """A machine shutting down signals the warm host too: it retires instead of dying, so the
    replica it forked is not orphaned (and killed) while it drains."""

    async def scenario(spec: PackageSpec) -> None:
        replica = await start(runtime, spec)
        assert replica.tier == Tier.WARM_HOST
        host = runtime._hosts[spec.root]
        handle = replica.submit(PredictionRequest(id="h", input={"mode": "sleep", "seconds": 1}))
        async for event in handle.events():
            if event.type == "started":
                os.kill(host.pid, signal.SIGTERM)
                os.kill(replica.pid, signal.SIGTERM)
        result = await handle.result()
        assert result.status == "succeeded", result.error
        assert await replica.wait_stopped() == 0

    hosted(runtime, scenario, read_package(SYNC))


def test_a_process_the_predictor_forks_still_dies_on_sigterm(runtime: LocalRuntime) -> None:
    """The worker drains on SIGTERM; what the predictor forks must not inherit that."""
    run = run_once(runtime, STEPS, input={"child": True})
    assert run.result.status == "succeeded", run.result.error
    assert run.outputs[0] == f"child exit {-signal.SIGTERM}"
