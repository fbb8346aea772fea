"""The cost ledger with real replicas and a clock the test moves: reconciliation, cold-start
attribution, idle-warm time, and the report through the API's data path."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from ember.control.errors import BudgetExceeded
from ember.control.platform import Platform
from ember.control.policies.billing import IDLE
from ember.control.prices import DEFAULT_PRICES
from tests.support.paths import model_path
from tests.support.replicas import submit

FORKABLE = model_path("ember", "forkable")
H100 = DEFAULT_PRICES["gpu-h100"].per_second


class ManualClock:
    """Time stands still until the test moves it."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def eventually(check: Callable[[], Awaitable[bool] | bool], timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while True:
            result = check()
            if await result if isinstance(result, Awaitable) else result:
                return
            await asyncio.sleep(0.02)


def run(tmp_path: Path, scenario: Callable[[Platform, ManualClock], Awaitable[None]]) -> None:
    async def go() -> None:
        clock = ManualClock()
        platform = Platform(tmp_path / "home", admin_token="t", clock=clock)
        await platform.start()
        try:
            await platform.deploy_folder(FORKABLE, "ember")
            await scenario(platform, clock)
        finally:
            await platform.stop()

    asyncio.run(go())


def test_a_cold_start_is_charged_to_its_prediction_and_the_ledger_reconciles(
    tmp_path: Path,
) -> None:
    async def scenario(platform: Platform, clock: ManualClock) -> None:
        await platform.deployments.update(
            "ember", "forkable", "ember", hardware="gpu-h100", scaling={"cold_start_tier": "cold"}
        )
        target = platform.deployments.for_deployment("ember", "forkable")
        state = await submit(platform, target, {"mode": "info"})
        await eventually(lambda: bool(target.runner.meters))  # the start was asked for
        clock.advance(10.0)  # ... and takes ten seconds of the test's clock
        assert await platform.book.wait(state, 20)
        assert state.status == "succeeded", state.error
        assert state.metrics["cold_start_cost"] == pytest.approx(10.0 * H100)
        assert state.metrics["cost"] == pytest.approx(10.0 * H100)
        assert state.metrics["queue_time"] == pytest.approx(10.0)  # it waited for the start

        clock.advance(50.0)  # warm and idle
        await platform.deployments.update("ember", "forkable", "ember", scaling={"idle_timeout": 0})
        await eventually(lambda: not target.runner.meters)  # stopped: its account is final
        await platform.ledger.stop()  # its row is written
        [usage] = await asyncio.to_thread(platform.store.replica_usage_since, None)
        assert usage.final and usage.hardware == "gpu-h100" and usage.tier == "cold"
        assert usage.starting_seconds == pytest.approx(10.0)
        assert usage.idle_seconds == pytest.approx(50.0)
        assert usage.cost == pytest.approx(60.0 * H100, rel=0.01)
        assert usage.attributed_start_cost == pytest.approx(10.0 * H100)

        [row, total] = await platform.insights.costs("deployment")
        assert row.key == "ember/forkable" and row.requests == 1 and row.replicas == 1
        assert total.cost == pytest.approx(60.0 * H100, rel=0.01)
        assert row.cold_start_cost == pytest.approx(10.0 * H100)
        assert row.idle_cost == pytest.approx(50.0 * H100)
        assert row.charged_to_predictions == pytest.approx(10.0 * H100)
        by_token = await platform.insights.costs("token")
        assert [r.key for r in by_token] == ["(overhead)", "(admin)", "total"]
        assert sum(r.cost for r in by_token[:-1]) == pytest.approx(total.cost)

    run(tmp_path, scenario)


def test_a_min_instances_replica_is_charged_as_idle_while_warm(tmp_path: Path) -> None:
    async def scenario(platform: Platform, clock: ManualClock) -> None:
        await platform.deployments.update("ember", "forkable", "ember", min_instances=1)
        runner = platform.deployments.for_deployment("ember", "forkable").runner
        await eventually(lambda: runner.status()["replicas"]["ready"] == 1)
        # Its meter moves to idle just after the replica says READY (the runner's start task
        # runs next): only then is the hour below idle time.
        [replica] = runner.replicas
        await eventually(lambda: runner.meters.get(replica.id).state == IDLE)
        clock.advance(3600.0)
        [row, total] = await platform.insights.costs("deployment")
        cpu = DEFAULT_PRICES["cpu"].per_second
        assert row.requests == 0
        assert row.idle_seconds == pytest.approx(3600.0)
        assert row.idle_cost == pytest.approx(3600.0 * cpu)
        assert total.cost == pytest.approx(row.gpu_seconds * cpu)
        assert row.utilization == 0.0

    run(tmp_path, scenario)


class ManualWall:
    def __init__(self, moment: datetime.datetime) -> None:
        self.moment = moment

    def __call__(self) -> datetime.datetime:
        return self.moment


def test_budgets_refuse_at_the_limit_and_reset_on_schedule(tmp_path: Path) -> None:
    async def go() -> None:
        clock = ManualClock()
        wall = ManualWall(datetime.datetime(2026, 11, 22, 10, 0, tzinfo=datetime.UTC))
        platform = Platform(tmp_path / "home", admin_token="t", clock=clock, wall=wall)
        await platform.start()
        try:
            await platform.deploy_folder(FORKABLE, "ember")
            await platform.deployments.update(
                "ember",
                "forkable",
                "ember",
                hardware="gpu-h100",
                scaling={"cold_start_tier": "cold"},
            )
            platform.budgets.cache_seconds = 0  # the test's clock moves faster than 2 s
            token_id, _ = await platform.tokens.create("alice", "ember", "predict")
            budget = await platform.budgets.add("token", token_id, "day", 5.0 * H100)
            spend = await platform.budgets.add("deployment", "ember/forkable", "month", 8.0 * H100)
            target = platform.deployments.for_deployment("ember", "forkable")

            await platform.budgets.check(token_id, "ember/forkable")  # nothing spent yet
            state = await submit(platform, target, {"mode": "info"}, token_id)
            await eventually(lambda: bool(target.runner.meters))
            clock.advance(10.0)  # a ten-second cold start: over both budgets
            assert await platform.book.wait(state, 20) and state.status == "succeeded"

            with pytest.raises(BudgetExceeded) as refused:
                await platform.budgets.check(token_id, None)
            assert refused.value.refusal.budget == budget
            message = str(refused.value)
            assert f"API token {token_id}" in message
            assert "resets at 2026-11-23T00:00:00+00:00" in message
            with pytest.raises(BudgetExceeded) as refused:
                await platform.budgets.check(None, "ember/forkable")
            assert refused.value.refusal.budget == spend
            assert "resets at 2026-12-01T00:00:00+00:00" in str(refused.value)
            await platform.budgets.check("someone-else", None)  # other tokens are not limited

            wall.moment = datetime.datetime(2026, 11, 23, 0, 0, 1, tzinfo=datetime.UTC)
            await platform.budgets.check(token_id, None)  # a new day, a fresh budget
        finally:
            await platform.stop()

    asyncio.run(go())


def test_the_last_checkpoint_of_a_crashed_ember_is_closed_at_the_next_start(
    tmp_path: Path,
) -> None:
    """Replicas die with Ember: their accounts end where their last checkpoint did, instead
    of counting as running forever in reports and budgets."""

    async def go() -> None:
        first = Platform(tmp_path / "home", admin_token="t")
        await first.start()
        requested = datetime.datetime(2026, 11, 1, 12, 0, tzinfo=datetime.UTC)
        row = {
            "id": "r-crashed",
            "deployment": "ember/forkable",
            "hardware": "cpu",
            "tier": "cold",
            "rate": 0.001,
            "requested_at": requested,
            "stopped_at": None,
            "starting_seconds": 10.0,
            "busy_seconds": 20.0,
            "idle_seconds": 30.0,
            "draining_seconds": 0.0,
            "attributed_start_cost": 0.0,
            "cost": 0.06,
            "final": False,
        }
        await asyncio.to_thread(first.store.upsert_replica_usage, [row])
        await first.stop()  # as if it had died: the row was only a checkpoint

        second = Platform(tmp_path / "home", admin_token="t")
        await second.start()
        try:
            [usage] = await asyncio.to_thread(second.store.replica_usage_since, None)
            assert usage.final
            stopped = usage.stopped_at.replace(tzinfo=datetime.UTC)
            assert stopped == requested + datetime.timedelta(seconds=60)
            since = datetime.datetime(2026, 11, 20, tzinfo=datetime.UTC)
            rows = await second.insights.costs("deployment", since)  # it ended weeks before
            assert [r.key for r in rows] == ["total"] and rows[0].cost == 0
        finally:
            await second.stop()

    asyncio.run(go())
