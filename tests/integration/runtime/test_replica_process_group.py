"""Processes a model's setup() starts belong to its replica: when the replica stops, however
it stops (a clean drain included, where the worker exits by itself), nothing it started may
live on holding ports, memory or a GPU. Processes that leave the group (setsid, a daemon's
new session) are out of reach of this and are left to another mechanism."""

from __future__ import annotations

import asyncio

import pytest

from ember.runtime.local import LocalRuntime
from tests.support.paths import model_path
from tests.support.processes import alive, wait_gone
from tests.support.replicas import predict, start

SETUP_CHILD = model_path("faults", "setup-child")


@pytest.mark.parametrize("drain", [True, False], ids=["drained", "killed"])
def test_a_stopped_replica_leaves_no_process_setup_started(
    runtime: LocalRuntime, drain: bool
) -> None:
    async def go() -> int:
        replica = await start(runtime, SETUP_CHILD)
        run = await predict(replica, input={})
        assert run.result.status == "succeeded", run.result.error
        helper = run.result.output
        assert isinstance(helper, int) and alive(helper)
        await replica.stop(drain=drain)
        if drain:
            assert replica.exit_code == 0  # the worker ended by itself, not by a kill
        return helper

    helper = asyncio.run(go())
    assert wait_gone([helper]) == []
