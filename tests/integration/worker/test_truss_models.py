"""Truss packages written exactly as a Truss user writes them (config.yaml + model/model.py,
class Model, no truss import), run unchanged on real worker processes."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from ember.packages.loader import read_package
from ember.packages.spec import PackageError
from ember.runtime.base import PredictionRequest
from tests.support.paths import model_path
from tests.support.replicas import predict, run_once, start


def truss(name: str) -> Path:
    return model_path("truss", name)


async def _concurrently(replica, inputs: list[dict]) -> list:
    handles = [
        replica.submit(PredictionRequest(id=f"c{i}", input=value)) for i, value in enumerate(inputs)
    ]
    return [await handle.result() for handle in handles]


def test_prepost_spec_is_read_from_config_yaml():
    spec = read_package(truss("prepost"))
    assert spec.format == "truss"
    assert spec.name == "prepost-model"  # model_name, lowercased, spaces → dashes
    assert spec.predictor == "model/model.py:Model"
    assert spec.python_version == "3.11"  # py311
    assert spec.max_concurrency == 1
    assert spec.environment == {"GREETING_PUNCTUATION": "!"}
    assert spec.resources.cpu == 0.5
    assert spec.resources.memory == 512 * 2**20
    assert spec.resources.gpu is None
    assert spec.options["config"]["secrets"] == {"api_key": None}


def test_prepost_hooks_state_config_and_secret(runtime):
    secret = "sk-test-0123456789"
    base = read_package(truss("prepost"))
    spec = base.model_copy(update={"environment": {**base.environment, "api_key": secret}})

    async def go():
        replica = await start(runtime, spec)
        try:
            first = await predict(replica, "p1", input={"text": "  World  "})
            second = await predict(replica, "p2", input={"text": "Again"})
            return replica.schema, first, second
        finally:
            await replica.stop()

    schema, first, second = asyncio.run(go())
    assert first.result.status == "succeeded", first.result.error
    out = first.result.output
    # preprocess lowercased/stripped, predict used load()'s state (read from data_dir) and the
    # environment_variables, postprocess wrapped it: the trace shows the order.
    assert out["trace"] == ["preprocess", "predict", "postprocess"]
    assert out["text"] == "hello world!"
    assert out["model_name"] == "Prepost Model"  # the config kwarg is the whole config.yaml
    assert out["cpu"] == "500m"
    assert out["api_key_sha256"] == hashlib.sha256(secret.encode()).hexdigest()

    assert second.result.status == "succeeded", second.result.error
    assert second.result.output["text"] == "hello again!"
    # One model object on the replica: the call counter advanced, load() still ran once.
    assert (out["call"], second.result.output["call"]) == (1, 2)
    assert out["loads"] == second.result.output["loads"] == 1

    inputs = schema["components"]["schemas"]["Input"]
    assert inputs["type"] == "object"
    assert inputs["additionalProperties"] is True  # free-form model_input
    assert inputs.get("properties", {}) == {}
    assert not inputs.get("required")
    output = schema["components"]["schemas"]["Output"]
    assert "x-cog-array-type" not in output


def test_streaming_generator_streams_output_events(runtime):
    async def go():
        replica = await start(runtime, truss("streaming"))
        try:
            run = await predict(replica, input={"count": 4})
            return replica.schema, run
        finally:
            await replica.stop()

    schema, run = asyncio.run(go())
    assert run.result.status == "succeeded", run.result.error
    assert run.outputs == ["alpha ", "beta ", "gamma ", "delta "]
    assert run.result.output == run.outputs  # the final value is the list of items
    assert [e.type for e in run.events].index("started") < [e.type for e in run.events].index(
        "output"
    )
    output = schema["components"]["schemas"]["Output"]
    assert output["type"] == "array"
    assert output["x-cog-array-type"] == "iterator"
    assert "x-cog-array-display" not in output  # a plain generator is not "concatenate"
    assert schema["components"]["schemas"]["Input"]["additionalProperties"] is True


def test_narrow_init_gets_only_config(runtime):
    async def go():
        replica = await start(runtime, truss("narrow-init"))
        try:
            return await predict(replica, input={"a": [1, 2], "b": {"nested": True}})
        finally:
            await replica.stop()

    run = asyncio.run(go())
    assert run.result.status == "succeeded", run.result.error
    assert run.result.output == {
        "model_name": "narrow-init",
        "owner": "tests",
        "echo": {"a": [1, 2], "b": {"nested": True}},  # free-form input passes through
    }


def test_async_predict_concurrency_overlaps_and_is_bounded(runtime):
    spec = read_package(truss("async-concurrent"))
    assert spec.max_concurrency == 3

    async def go():
        replica = await start(runtime, spec)
        try:
            assert replica.max_concurrency == 3
            return await _concurrently(replica, [{"id": i, "sleep": 0.5} for i in range(4)])
        finally:
            await replica.stop()

    results = asyncio.run(go())
    assert [r.status for r in results] == ["succeeded"] * 4, [r.error for r in results]
    first_three = results[:3]
    assert max(r.started_at for r in first_three) < min(r.completed_at for r in first_three)
    # predict_concurrency bounds it: never more than 3 at once, the fourth waited for a slot.
    assert max(r.output["peak"] for r in results) == 3
    assert results[3].started_at >= min(r.completed_at for r in first_three)


def test_sync_predict_concurrency_runs_in_threads(runtime):
    async def go():
        replica = await start(runtime, truss("sync-concurrent"))
        try:
            return await _concurrently(replica, [{"id": i, "sleep": 0.5} for i in range(3)])
        finally:
            await replica.stop()

    results = asyncio.run(go())
    assert [r.status for r in results] == ["succeeded"] * 3, [r.error for r in results]
    a, b, c = results
    assert max(a.started_at, b.started_at) < min(a.completed_at, b.completed_at)
    assert max(r.output["peak"] for r in results) == 2
    assert c.started_at >= min(a.completed_at, b.completed_at)
    assert all(r.output["thread"] != "MainThread" for r in results)


def test_truss_resources_accelerator_and_millicores(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.py").write_text(
        "class Model:\n    def predict(self, model_input):\n        return model_input\n"
    )
    (tmp_path / "config.yaml").write_text(
        "model_name: big\n"
        "resources:\n  accelerator: H100:2\n  cpu: 500m\n  memory: 4Gi\n  use_gpu: true\n"
    )
    spec = read_package(tmp_path)
    assert spec.resources.gpu is not None
    assert (spec.resources.gpu.type, spec.resources.gpu.count) == ("H100", 2)
    assert spec.resources.cpu == 0.5
    assert spec.resources.memory == 4 * 2**30


def test_truss_config_not_a_mapping_is_a_package_error(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.py").write_text("class Model: ...\n")
    (tmp_path / "config.yaml").write_text("- just\n- a list\n")
    with pytest.raises(PackageError, match="must be a mapping"):
        read_package(tmp_path)


def test_model_without_init_gets_no_kwargs(runtime):
    """Truss inspects the class's signature, () without an __init__, and passes nothing
    (object.__init__'s own *args/**kwargs must not count as accepting them)."""
    run = run_once(runtime, truss("no-init"), input={"text": "hi"})
    assert run.result.status == "succeeded", run.result.error
    assert run.result.output == "hi!"


def test_sync_predict_with_async_preprocess_runs_in_threads(runtime):
    """With any hook async, Truss still runs a sync predict in a thread (to_thread.run_sync),
    so blocking predicts neither stall the event loop nor each other."""

    async def go():
        replica = await start(runtime, truss("mixed-async"))
        try:
            return await _concurrently(replica, [{"id": i, "sleep": 0.5} for i in range(2)])
        finally:
            await replica.stop()

    results = asyncio.run(go())
    assert [r.status for r in results] == ["succeeded"] * 2, [r.error for r in results]
    assert all(r.output["thread"] != "MainThread" for r in results)
    # started_at is stamped before predict runs, so judge overlap by when each one finished.
    first, second = sorted(r.completed_at for r in results)
    assert (second - first).total_seconds() < 0.3
