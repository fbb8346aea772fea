"""Processes a model's setup() starts belong to its replica: when the replica stops, however
it stops (a clean drain included, where the worker exits by itself), nothing it started may
live on holding ports, memory or a GPU. Processes that leave the group (setsid, a daemon's
new session) are out of reach of this and are left to another mechanism."""

from __future__ import annotations

import asyncio

import pytest

from ember.packages.loader import read_package
from ember.packages.spec import PackageSpec
from ember.runtime.base import Tier
from ember.runtime.local import LocalRuntime
from tests.support.paths import model_path
from tests.support.processes import alive, outside_pid, wait_gone
from tests.support.replicas import hosted, predict, start

SETUP_CHILD = model_path("faults", "setup-child")


@pytest.mark.parametrize("drain", [True, False], ids=["drained", "killed"])
def test_a_stopped_replica_leaves_no_process_setup_started(
    runtime: LocalRuntime, drain: bool
) -> None:
    async def go() -> int:
        replica = await start(runtime, SETUP_CHILD)
        run = await predict(replica, input={})
        assert run.result.status == "succeeded", run.result.error
        assert isinstance(run.result.output, int)
        helper = outside_pid(run.result.output, beside=replica.pid)
        assert alive(helper)
        await replica.stop(drain=drain)
        if drain:
            assert replica.exit_code == 0  # the worker ended by itself, not by a kill
        return helper

    helper = asyncio.run(go())
    assert wait_gone([helper]) == []


def test_a_forked_replica_leaves_no_process_setup_started(runtime: LocalRuntime) -> None:
    """A replica forked from a warm host is its own process group too (it calls setsid), and
    its setup() (run in the fork when the host's setup started processes) is cleaned up the
    same way; the warm host itself is not touched."""
    helpers: list[int] = []

    async def scenario(spec: PackageSpec) -> None:
        replica = await start(runtime, spec)
        assert replica.tier == Tier.WARM_HOST
        run = await predict(replica, input={})
        assert run.result.status == "succeeded", run.result.error
        helpers.append(outside_pid(run.result.output, beside=replica.pid))
        assert alive(helpers[0])
        await replica.stop()
        assert replica.exit_code == 0
        assert wait_gone(helpers) == []
        # the host lives on and forks the next replica
        again = await start(runtime, spec)
        await again.stop()

    hosted(runtime, scenario, read_package(SETUP_CHILD))


def test_a_stopped_replica_whose_setup_started_a_multiprocessing_child_exits(
    runtime: LocalRuntime,
) -> None:
    """A worker that drained and stopped used to hang in Python's exit, joining a non-daemon
    `multiprocessing` child of setup() forever, and with it the `stop()` of the replica that
    `ember deploy` starts to check setup: the deploy never answered."""

    async def go() -> int:
        replica = await start(runtime, model_path("faults", "setup-multiprocessing"))
        run = await predict(replica, input={})
        assert run.result.status == "succeeded", run.result.error
        helper = outside_pid(run.result.output, beside=replica.pid)
        async with asyncio.timeout(60):
            await replica.stop()
        return helper

    helper = asyncio.run(go())
    assert wait_gone([helper]) == []
