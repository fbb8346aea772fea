"""A model's own healthcheck (Cog's `healthcheck()`) in a real replica: asked beside running
predictions, answered within Cog's 5 s with coglet's messages, run on the predictor's event
loop when it is async, and a gate to readiness after setup."""

from __future__ import annotations

import asyncio
import time

from ember.packages.loader import read_package
from ember.runtime.base import ReplicaState
from ember.runtime.local import LocalRuntime
from tests.support.paths import model_path
from tests.support.replicas import predict, start

SYNC = model_path("cog", "healthcheck")
ASYNC = model_path("cog", "healthcheck-async")
FAILED = "Healthcheck failed: "


def test_answers_follow_the_model_and_a_hanging_check_times_out(runtime: LocalRuntime) -> None:
    async def go() -> None:
        replica = await start(runtime, SYNC)
        try:
            assert await replica.healthcheck() is None
            answers = {}
            for number, mode in enumerate(("false", "raise", "none", "slow", "ok")):
                run = await predict(replica, f"p{number}", input={"mode": mode})
                assert run.result.status == "succeeded", run.result.error
                began = time.monotonic()
                answers[mode] = (await replica.healthcheck(), time.monotonic() - began)
            assert answers["false"][0] == FAILED + "user-defined healthcheck returned False"
            assert answers["raise"][0] == FAILED + "RuntimeError: the GPU fell off the bus"
            assert answers["none"][0] is None  # only False (or raising) is unhealthy
            assert answers["slow"][0] == (
                FAILED + "user-defined healthcheck timed out after 5.0 seconds"
            )
            assert 4.5 < answers["slow"][1] < 8
            assert answers["ok"][0] is None
        finally:
            await replica.stop()

    asyncio.run(go())


def test_a_check_during_a_prediction_answers_at_once(runtime: LocalRuntime) -> None:
    async def go() -> None:
        replica = await start(runtime, SYNC)
        try:
            running = asyncio.ensure_future(predict(replica, "long", input={"sleep": 3.0}))
            await asyncio.sleep(0.5)
            began = time.monotonic()
            assert await replica.healthcheck() is None
            assert time.monotonic() - began < 1.5  # not queued behind the prediction
            assert not running.done()
            assert (await running).result.status == "succeeded"
        finally:
            await replica.stop()

    asyncio.run(go())


def test_an_async_check_runs_on_the_predictors_loop(runtime: LocalRuntime) -> None:
    async def go() -> None:
        replica = await start(runtime, ASYNC)
        try:
            assert (await predict(replica, "a", input={"mode": "ok"})).result.output == "ok"
            assert await replica.healthcheck() is None  # the same loop as predict()'s
            await predict(replica, "b", input={"mode": "false"})
            assert await replica.healthcheck() == (
                FAILED + "user-defined healthcheck returned False"
            )
            await predict(replica, "c", input={"mode": "slow"})
            assert await replica.healthcheck() == (
                FAILED + "user-defined healthcheck timed out after 5.0 seconds"
            )
            # The loop was not blocked meanwhile: predictions still run.
            assert (await predict(replica, "d", input={"mode": "ok"})).result.output == "ok"
        finally:
            await replica.stop()

    asyncio.run(go())


def test_a_model_unwell_after_setup_is_served_and_says_so(runtime: LocalRuntime) -> None:
    """As Cog does: the replica serves; its first check's answer comes with READY (the
    control plane counts it toward replacing the replica) and is in the setup logs."""

    async def go() -> None:
        spec = read_package(model_path("cog", "healthcheck-fails-at-start"))
        replica = await runtime.start_replica(spec)
        try:
            assert await replica.wait_started() == ReplicaState.READY
            assert replica.startup_health == FAILED + "user-defined healthcheck returned False"
            assert "setup() finished but the model's healthcheck failed" in replica.setup_logs
            assert (await predict(replica, "p", input={"text": "x"})).result.output == "x"
            assert await replica.healthcheck() == replica.startup_health
        finally:
            await replica.stop()

    asyncio.run(go())
