"""A Cog model's metrics and sys.exit() in a real replica: what Cog's server reports is what
Ember reports (nested dotted names, refused names failing the prediction with coglet's
message, the runtime's predict_time; `SystemExit: 3` as the error, the worker living on)."""

from __future__ import annotations

import asyncio

from ember.runtime.base import ReplicaState
from ember.runtime.local import LocalRuntime
from tests.support.paths import model_path
from tests.support.replicas import predict, run_once, start

MODEL = model_path("cog", "metrics-and-exit")


def test_metrics_nest_and_the_runtime_keeps_predict_time(runtime: LocalRuntime) -> None:
    run = run_once(runtime, MODEL, input={"action": "metrics"})
    assert run.result.status == "succeeded", run.result.error
    metrics = dict(run.result.metrics)
    predict_time = metrics.pop("predict_time")
    assert 0 <= predict_time < 1000  # the model's own predict_time did not survive
    assert metrics == {"stage": {"load": {"seconds": 0.25, "tries": 2}, "tags": ["warm"]}}


def test_refused_names_fail_the_prediction_and_sys_exit_leaves_the_worker_alive(
    runtime: LocalRuntime,
) -> None:
    async def go() -> None:
        replica = await start(runtime, MODEL)
        try:
            refused = {
                "_invalid": "must start with a letter",
                "foo..bar": "empty segments",
                "predict_time": "'predict_time' is reserved by the runtime",
                "cog.system": "the 'cog.' prefix is reserved",
                "a.b.c.d.e": "at most 4 dot-separated segments",
            }
            for number, (name, message) in enumerate(refused.items()):
                run = await predict(
                    replica, f"bad{number}", input={"action": "record", "name": name}
                )
                assert run.result.status == "failed", name
                assert message in (run.result.error or ""), run.result.error

            exited = await predict(replica, "exit", input={"action": "exit"})
            assert (exited.result.status, exited.result.error) == ("failed", "SystemExit: 3")

            after = await predict(replica, "after", input={"action": "record", "name": "ok_1"})
            assert after.result.status == "succeeded", after.result.error
            assert after.result.metrics["ok_1"] == 1
            assert replica.state == ReplicaState.READY  # the same worker served them all
        finally:
            await replica.stop()

    asyncio.run(go())
