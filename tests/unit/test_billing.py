"""The replica meter and the price table: pure, with a clock passed in."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest

from ember.control.policies.billing import BUSY, DRAINING, IDLE, STARTING, ReplicaMeter
from ember.control.prices import DEFAULT_PRICES, PriceError, PriceTable, load_overrides
from ember.control.reports import ReplicaAccount, summarize

RATE = 0.001


def test_a_replica_life_splits_into_states_that_sum_to_wall_time() -> None:
    meter = ReplicaMeter(RATE, requested_at=100.0)
    meter.ready(110.0, waiting=1)
    meter.started("a", 110.0, accepted_at=101.0)
    meter.finished("a", 114.0)
    meter.draining(120.0)
    usage = meter.stopped(121.0)
    assert usage.seconds == {STARTING: 10.0, BUSY: 4.0, IDLE: 6.0, DRAINING: 1.0}
    assert usage.total_cost == pytest.approx(21.0 * RATE)
    assert sum(usage.cost(s) for s in usage.seconds) == pytest.approx(usage.total_cost)


def test_the_cold_start_is_charged_to_the_predictions_that_waited_for_it() -> None:
    meter = ReplicaMeter(RATE, requested_at=0.0)
    meter.ready(10.0, waiting=2)  # two waited; the start cost 10 s
    meter.started("a", 10.0, accepted_at=1.0)
    first = meter.finished("a", 12.0)
    meter.started("b", 12.0, accepted_at=2.0)
    second = meter.finished("b", 13.0)
    meter.started("late", 20.0, accepted_at=15.0)  # came after: pays no start
    late = meter.finished("late", 21.0)
    assert first.cold_start_cost == second.cold_start_cost == pytest.approx(5.0 * RATE)
    assert late.cold_start_cost == 0.0
    assert first.predict_cost == pytest.approx(2.0 * RATE)
    assert first.total == pytest.approx(7.0 * RATE)
    assert meter.usage.attributed_start_cost == pytest.approx(10.0 * RATE)


def test_waiting_predictions_are_spread_over_the_replicas_starting_for_them() -> None:
    meter = ReplicaMeter(RATE, requested_at=0.0)
    meter.ready(4.0, waiting=4, starting_replicas=2)  # two of the four will come here
    charges = []
    for name in ("a", "b"):
        meter.started(name, 4.0, accepted_at=0.5)
        charges.append(meter.finished(name, 5.0))
    assert [c.cold_start_cost for c in charges] == pytest.approx([2.0 * RATE, 2.0 * RATE])


def test_concurrent_predictions_share_the_busy_seconds() -> None:
    meter = ReplicaMeter(RATE, requested_at=0.0)
    meter.ready(0.0, waiting=0)
    meter.started("a", 0.0, accepted_at=0.0)
    meter.started("b", 2.0, accepted_at=0.0)
    a = meter.finished("a", 4.0)  # alone 2 s, shared 2 s
    b = meter.finished("b", 6.0)  # shared 2 s, alone 2 s
    assert a.busy_seconds == pytest.approx(3.0) and b.busy_seconds == pytest.approx(3.0)
    assert meter.usage.seconds[BUSY] == pytest.approx(6.0)
    assert a.predict_cost + b.predict_cost == pytest.approx(6.0 * RATE)


def test_a_replica_told_to_stop_while_starting_drains_once_ready() -> None:
    meter = ReplicaMeter(RATE, requested_at=0.0)
    meter.draining(1.0)
    meter.ready(2.0, waiting=0)
    usage = meter.stopped(3.0)
    assert usage.seconds[STARTING] == 2.0 and usage.seconds[DRAINING] == 1.0
    assert usage.seconds[IDLE] == 0.0


def test_a_replica_that_never_became_ready_is_all_start_overhead() -> None:
    meter = ReplicaMeter(RATE, requested_at=0.0)
    usage = meter.stopped(3.0)
    assert usage.seconds[STARTING] == 3.0 and usage.attributed_start_cost == 0.0


def test_idle_time_of_a_warm_replica_is_idle() -> None:
    meter = ReplicaMeter(RATE, requested_at=0.0)
    meter.ready(1.0, waiting=0)
    assert meter.snapshot(3601.0).seconds[IDLE] == pytest.approx(3600.0)


def test_prices_default_to_their_sources_and_can_be_set() -> None:
    table = PriceTable()
    assert table.get("gpu-h100").per_second == 0.001525
    assert "replicate.com/pricing" in table.get("gpu-h100").source
    assert table.get("gpu-h100").dedicated_hourly == 2.01
    assert table.get("tpu-v9").per_second == DEFAULT_PRICES["cpu"].per_second
    assert "unknown SKU" in table.get("tpu-v9").source
    table.set("gpu-h100", per_second=0.001, dedicated_hourly=1.5)
    assert table.overrides() == {
        "gpu-h100": {"per_second": 0.001, "dedicated_hourly": 1.5, "source": "set by you"}
    }
    with pytest.raises(PriceError, match="finite number >= 0"):
        table.set("cpu", per_second=-1)
    with pytest.raises(PriceError, match="unknown field"):
        table.set("cpu", per_hour=1)


def test_price_files_are_read_and_checked(tmp_path: Path) -> None:
    good = tmp_path / "prices.json"
    good.write_text(json.dumps({"gpu-l4": {"per_second": 0.0002, "dedicated_hourly": 0.7}}))
    assert PriceTable(load_overrides(good)).get("gpu-l4").per_second == 0.0002
    bad = tmp_path / "prices.yaml"
    bad.write_text("cpu: 3\n")
    with pytest.raises(PriceError, match="must map SKUs"):
        load_overrides(bad)


def test_a_replica_counts_in_a_report_window_for_the_part_it_lived_in_it() -> None:
    start = datetime.datetime(2026, 11, 22, 10, 0, tzinfo=datetime.UTC)
    account = ReplicaAccount(
        id="r",
        deployment="ember/a",
        hardware="cpu",
        requested_at=start,
        starting_seconds=600.0,
        busy_seconds=1200.0,
        idle_seconds=1800.0,
        draining_seconds=0.0,
        rate=0.001,
        cost=3.6,
        stopped_at=start + datetime.timedelta(hours=1),
    )
    minutes = datetime.timedelta(minutes=1)
    half = account.within(start + 30 * minutes, start + 120 * minutes)
    assert half.cost == pytest.approx(1.8) and half.busy_seconds == pytest.approx(600.0)
    assert account.within(start - datetime.timedelta(days=1), start).cost == 0.0
    [row, total] = summarize([half], [], "deployment")
    assert total.cost == pytest.approx(1.8) and row.gpu_seconds == pytest.approx(1800.0)
