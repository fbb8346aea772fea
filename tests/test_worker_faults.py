"""A replica must report every failure of the code it runs, and never lose a prediction."""

from __future__ import annotations

import asyncio

import pytest
from conftest import model_path, predict, run_once, start

from ember.packages.loader import read_package
from ember.runtime.base import PredictionRequest, ReplicaState
from ember.runtime.local import LocalRuntime

SYNC = model_path("faults", "sync")
ASYNC = model_path("faults", "async")


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
        assert (await queued.result()).status in ("succeeded", "failed")
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
