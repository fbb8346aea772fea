"""A model's own healthcheck (Cog's `healthcheck()`) in a real replica: asked beside running
predictions, answered within Cog's 5 s with coglet's messages, run on the predictor's event
loop when it is async, and run once set up (its answer comes with READY)."""

from __future__ import annotations

import asyncio

from ember.runtime.local import LocalRuntime
from ember.runtime.local_replica import LocalReplica
from tests.support.paths import model_path
from tests.support.replicas import predict, with_replica

SYNC = model_path("cog", "healthcheck")
ASYNC = model_path("cog", "healthcheck-async")
FAILED = "Healthcheck failed: "


def test_answers_follow_the_model_and_a_hanging_check_times_out(runtime: LocalRuntime) -> None:
    async def body(replica: LocalReplica) -> None:
        assert await replica.healthcheck() is None
        answers = {}
        for number, mode in enumerate(("false", "raise", "none", "slow", "ok")):
            run = await predict(replica, f"p{number}", input={"mode": mode})
            assert run.result.status == "succeeded", run.result.error
            answers[mode] = await replica.healthcheck()
        assert answers["false"] == FAILED + "user-defined healthcheck returned False"
        assert answers["raise"] == FAILED + "RuntimeError: the GPU fell off the bus"
        assert answers["none"] is None  # only False (or raising) is unhealthy
        assert answers["slow"] == FAILED + "user-defined healthcheck timed out after 5.0 seconds"
        assert answers["ok"] is None

    with_replica(runtime, SYNC, body)


def test_a_check_during_a_prediction_answers_while_it_runs(runtime: LocalRuntime) -> None:
    async def body(replica: LocalReplica) -> None:
        running = asyncio.ensure_future(predict(replica, "long", input={"sleep": 3.0}))
        await asyncio.sleep(0.5)
        assert await replica.healthcheck() is None
        assert not running.done()  # answered beside the prediction, not queued behind it
        assert (await running).result.status == "succeeded"

    with_replica(runtime, SYNC, body)


def test_an_async_check_runs_on_the_predictors_loop(runtime: LocalRuntime) -> None:
    async def body(replica: LocalReplica) -> None:
        assert (await predict(replica, "a", input={"mode": "ok"})).result.output == "ok"
        assert await replica.healthcheck() is None  # the same loop as predict()'s
        await predict(replica, "b", input={"mode": "false"})
        assert await replica.healthcheck() == FAILED + "user-defined healthcheck returned False"
        await predict(replica, "c", input={"mode": "slow"})
        assert await replica.healthcheck() == (
            FAILED + "user-defined healthcheck timed out after 5.0 seconds"
        )
        # The loop was not blocked meanwhile: predictions still run.
        assert (await predict(replica, "d", input={"mode": "ok"})).result.output == "ok"

    with_replica(runtime, ASYNC, body)


def test_a_model_unwell_after_setup_is_served_and_says_so(runtime: LocalRuntime) -> None:
    """As Cog does: the replica serves; its first check's answer comes with READY (the
    control plane counts it toward replacing the replica) and is in the setup logs."""

    async def body(replica: LocalReplica) -> None:
        assert replica.startup_health == FAILED + "user-defined healthcheck returned False"
        assert "setup() finished but the model's healthcheck failed" in replica.setup_logs
        assert (await predict(replica, "p", input={"text": "x"})).result.output == "x"
        assert await replica.healthcheck() == replica.startup_health

    with_replica(runtime, model_path("cog", "healthcheck-fails-at-start"), body)


def test_a_model_without_a_healthcheck_is_never_sent_one(runtime: LocalRuntime) -> None:
    async def body(replica: LocalReplica) -> None:
        assert replica.has_healthcheck is False  # said with READY: no round trips for it
        assert replica.startup_health is None
        assert await replica.healthcheck() is None

    with_replica(runtime, model_path("cog", "hello-world"), body)
