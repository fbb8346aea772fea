"""Cold-start tiers with real processes: replicas forked from a warm host, its failures, and
the disk tier; plus the pure tier policy."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

from ember.control.platform import Platform
from ember.control.policies.tiers import TierRequest, choose_tiers
from ember.packages.loader import read_package
from ember.packages.spec import PackageSpec
from ember.runtime.base import ReplicaState, Tier
from ember.runtime.local import LocalRuntime
from tests.support.paths import model_path
from tests.support.processes import outside_pid
from tests.support.replicas import FORKABLE, hosted, predict, start, submit

GIB = 2**30


async def info(replica) -> dict:  # type: ignore[no-untyped-def]
    run = await predict(replica, f"p-{replica.id}", input={"mode": "info"})
    assert run.result.status == "succeeded", run.result.error
    return json.loads(run.result.output)


def test_replicas_fork_from_a_host_that_ran_setup_once(runtime: LocalRuntime) -> None:
    async def scenario(spec: PackageSpec) -> None:
        status = runtime.readiness(spec)
        assert status.tier == Tier.WARM_HOST and status.setup_in_host
        assert status.memory_bytes and status.memory_bytes > 0
        replicas = [await start(runtime, spec) for _ in range(2)]
        try:
            seen = [await info(r) for r in replicas]
            for replica, result in zip(replicas, seen, strict=True):
                assert replica.tier == Tier.WARM_HOST
                assert outside_pid(result["pid"], beside=replica.pid) == replica.pid
                assert result["pid"] != result["setup_pid"]
                phases = replica.start_phases()
                assert "fork" in phases and "setup" not in phases and "load" not in phases
            # One setup, in the host, shared by both; each replica its own random stream.
            assert seen[0]["setup_pid"] == seen[1]["setup_pid"]
            assert seen[0]["random"] != seen[1]["random"]
        finally:
            await asyncio.gather(*(r.stop() for r in replicas))

    hosted(runtime, scenario)


def test_a_start_while_the_host_is_starting_waits_for_it(runtime: LocalRuntime) -> None:
    """The host is ahead of a spawn doing the same imports and setup."""

    async def scenario(spec: PackageSpec) -> None:
        replica = await start(runtime, spec)
        assert replica.tier == Tier.WARM_HOST
        assert {"host_wait", "fork"} <= set(replica.start_phases())
        await replica.stop()

    hosted(runtime, scenario, wait=False)


def test_a_forked_replica_that_crashes_or_is_killed_reports_its_exit_code(
    runtime: LocalRuntime,
) -> None:
    async def scenario(spec: PackageSpec) -> None:
        replica = await start(runtime, spec)
        run = await predict(replica, input={"mode": "crash"})
        assert run.result.status == "failed"
        assert "exited with code 3" in run.result.error
        assert await replica.wait_stopped() == 3
        replica = await start(runtime, spec)
        replica.kill("test")
        assert await replica.wait_stopped() == -signal.SIGKILL

    hosted(runtime, scenario)


def test_when_the_host_dies_its_replicas_are_stopped_and_starts_spawn(
    runtime: LocalRuntime,
) -> None:
    async def scenario(spec: PackageSpec) -> None:
        replica = await start(runtime, spec)
        running = asyncio.create_task(predict(replica, input={"mode": "sleep"}))
        await asyncio.sleep(0.3)
        host = runtime._hosts[spec.root]
        os.kill(host.pid, signal.SIGKILL)
        run = await asyncio.wait_for(running, 10)
        assert run.result.status == "failed"
        assert await replica.wait_stopped() == -signal.SIGKILL
        assert not runtime.readiness(spec).ready
        spawned = await start(runtime, spec)
        assert spawned.tier == Tier.COLD and "spawn" in spawned.start_phases()
        await spawned.stop()

    hosted(runtime, scenario)


def test_a_setup_that_starts_threads_is_not_forked_from(runtime: LocalRuntime) -> None:
    """Forking after setup() started threads (an OpenMP pool...) could deadlock the children:
    the host then only imports, and each replica runs setup() itself."""

    async def scenario(spec: PackageSpec) -> None:
        status = runtime.readiness(spec)
        assert status.ready and not status.setup_in_host
        replica = await start(runtime, spec)
        assert replica.tier == Tier.WARM_HOST and "setup" in replica.start_phases()
        result = await info(replica)
        assert result["setup_pid"] == result["pid"]
        await replica.stop()

    threads = read_package(FORKABLE).model_copy(update={"environment": {"START_THREAD": "1"}})
    hosted(runtime, scenario, threads)


def test_a_setup_that_starts_a_process_runs_in_each_replica(runtime: LocalRuntime) -> None:
    """A process setup() started in the host would be the host's child: the replica's
    Popen.poll() would get ECHILD and call it ended. The host then only imports, and each
    replica runs setup() and owns what it starts."""

    async def scenario(spec: PackageSpec) -> None:
        status = runtime.readiness(spec)
        assert status.ready and not status.setup_in_host
        replica = await start(runtime, spec)
        result = await info(replica)
        assert result["setup_pid"] == result["pid"] and result["helper_running"]
        await replica.stop()

    helper = read_package(FORKABLE).model_copy(update={"environment": {"START_PROCESS": "1"}})
    hosted(runtime, scenario, helper)


def test_an_import_that_starts_threads_leaves_no_warm_host_and_starts_spawn(
    runtime: LocalRuntime,
) -> None:
    async def scenario(spec: PackageSpec) -> None:
        status = runtime.readiness(spec)
        assert not status.ready and "importing the predictor started 1 thread" in status.detail
        replica = await start(runtime, spec)
        assert replica.tier == Tier.COLD
        await replica.stop()

    threads = read_package(FORKABLE).model_copy(update={"environment": {"IMPORT_THREAD": "1"}})
    hosted(runtime, scenario, threads)


def test_setup_in_host_can_be_turned_off(runtime: LocalRuntime) -> None:
    async def scenario(spec: PackageSpec) -> None:
        assert not runtime.readiness(spec).setup_in_host
        replica = await start(runtime, spec)
        result = await info(replica)
        assert result["setup_pid"] == result["pid"]
        await replica.stop()

    hosted(runtime, scenario, read_package(FORKABLE).model_copy(update={"setup_in_host": False}))


def test_a_host_whose_setup_fails_leaves_starts_cold_with_the_reason(
    runtime: LocalRuntime,
) -> None:
    async def scenario(spec: PackageSpec) -> None:
        status = runtime.readiness(spec)
        assert not status.ready and "weights file is corrupt" in (status.detail or "")
        replica = await runtime.start_replica(spec)
        assert replica.tier == Tier.COLD
        assert await replica.wait_started() == ReplicaState.SETUP_FAILED

    hosted(runtime, scenario, read_package(model_path("faults", "setup-raises")))


def test_the_disk_tier_keeps_weight_files_cached(runtime: LocalRuntime, tmp_path: Path) -> None:
    package = tmp_path / "weighted"
    package.mkdir()
    for name in ("ember.yaml", "predict.py"):
        (package / name).write_text((FORKABLE / name).read_text())
    (package / "model.safetensors").write_bytes(os.urandom(2 * 2**20))
    (package / "notes.txt").write_bytes(b"x" * 2 * 2**20)

    async def scenario(spec: PackageSpec) -> None:
        status = runtime.readiness(spec)
        assert status.ready and status.detail == "1 files, 2 MiB kept cached"
        replica = await start(runtime, spec)
        assert replica.tier == Tier.DISK and "spawn" in replica.start_phases()
        await replica.stop()

    hosted(runtime, scenario, read_package(package), Tier.DISK)


def test_a_deployment_whose_forked_replicas_fail_setup_starts_in_full(tmp_path: Path) -> None:
    """A model that cannot be set up after a fork (CUDA initialised by an import) still runs:
    one failed forked start, then full starts, said in its status."""
    package = tmp_path / "forkshy"
    package.mkdir()
    (package / "predict.py").write_text((FORKABLE / "predict.py").read_text())
    (package / "ember.yaml").write_text(
        "name: forkshy\npredictor: predict.py:Predictor\nsetup_in_host: false\n"
        "environment: {FAIL_IF_FORKED: '1'}\n"
    )

    async def go() -> None:
        platform = Platform(tmp_path / "home", admin_token="t")
        await platform.start()
        try:
            await platform.deploy_folder(package, "ember")
            target = platform.deployments.for_deployment("ember", "forkshy")
            for _ in range(400):
                if target.runner.status()["cold_start"]["ready"]:
                    break
                await asyncio.sleep(0.025)
            state = await submit(platform, target, {"mode": "info"})
            assert await platform.book.wait(state, 30)
            assert state.status == "succeeded", state.error
            result = json.loads(state.output)
            assert result["setup_pid"] == result["pid"]  # set up in a full start
            cold_start = target.runner.status()["cold_start"]
            assert not cold_start["ready"] and "failed to set up" in cold_start["detail"]
        finally:
            await platform.stop()

    asyncio.run(go())


# -- the pure policy ---------------------------------------------------------------------------


def request(name: str, active: float, memory: int = GIB, **fields: object) -> TierRequest:
    values: dict = {"package": name, "requested": "auto", "host_memory": memory, **fields}
    return TierRequest(deployment=name, last_active=active, **values)


def test_warm_hosts_go_to_the_most_recently_used_within_the_budget() -> None:
    choices = choose_tiers(
        [request("old", 100.0), request("new", 900.0), request("mid", 500.0)],
        now=1000.0,
        memory_budget=2 * GIB,
    )
    assert choices["new"].tier == choices["mid"].tier == Tier.WARM_HOST
    assert choices["old"].tier == Tier.DISK and "budget" in choices["old"].reason


def test_a_shared_package_counts_once_and_set_tiers_are_kept() -> None:
    choices = choose_tiers(
        [
            request("a", 900.0, package="pkg"),
            request("b", 800.0, package="pkg"),
            request("pinned", 10.0, requested="warm-host"),
            request("frugal", 950.0, requested="cold"),
        ],
        now=1000.0,
        memory_budget=2 * GIB,
    )
    assert choices["a"].tier == choices["b"].tier == Tier.WARM_HOST
    assert choices["pinned"].tier == Tier.WARM_HOST
    assert choices["frugal"].tier == Tier.COLD and choices["frugal"].reason.startswith("set")


def test_a_running_host_is_not_swapped_for_a_deployment_used_a_moment_later() -> None:
    turns = [
        request("a", 990.0, 2 * GIB, hosted=True),
        request("b", 1000.0, 2 * GIB),  # takes turns with a; both do not fit
    ]
    choices = choose_tiers(turns, now=1000.0, memory_budget=3 * GIB)
    assert choices["a"].tier == Tier.WARM_HOST and choices["b"].tier == Tier.DISK
    stale = [request("a", 0.0, 2 * GIB, hosted=True), request("b", 1000.0, 2 * GIB)]
    choices = choose_tiers(stale, now=1000.0, memory_budget=3 * GIB)  # a idle 1000 s > hold
    assert choices["b"].tier == Tier.WARM_HOST and choices["a"].tier == Tier.DISK


def test_a_deployment_unused_for_a_day_gives_its_host_memory_back() -> None:
    choices = choose_tiers([request("idle", 0.0)], now=25 * 3600.0, memory_budget=64 * GIB)
    assert choices["idle"].tier == Tier.DISK and "unused for 25 h" in choices["idle"].reason
