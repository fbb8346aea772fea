"""The dashboard's time series as pure functions: bucket widths, percentiles, where each
prediction, sample and replica-second lands, and the timeline's bounded memory."""

from __future__ import annotations

import datetime

import pytest

from ember.control import timeline as timeline_module
from ember.control.reports import ReplicaAccount
from ember.control.timeline import Sample, Timeline
from ember.control.timeseries import FinishedPrediction, build, choose_step, percentile

T0 = 1_800_000_000.0  # a multiple of every step


def account(born: float, died: float | None, cost: float) -> ReplicaAccount:
    def moment(at: float) -> datetime.datetime:
        return datetime.datetime.fromtimestamp(at, datetime.UTC)

    return ReplicaAccount(
        id=f"r{born}",
        deployment="a/b",
        hardware="cpu",
        requested_at=moment(born),
        starting_seconds=0,
        busy_seconds=0,
        idle_seconds=0,
        draining_seconds=0,
        rate=0.001,
        cost=cost,
        stopped_at=moment(died) if died is not None else None,
    )


@pytest.mark.parametrize(
    ("span", "step"),
    [(300, 5), (900, 10), (3600.4, 30), (6 * 3600, 300), (86400, 900), (7 * 86400, 7200)],
)
def test_the_step_is_the_smallest_readable_width_within_120_buckets(span: float, step: int) -> None:
    assert choose_step(span) == step


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50 and percentile(values, 99) == 99
    assert percentile([7.0], 99) == 7.0


def test_predictions_land_in_the_bucket_they_finished_in() -> None:
    done = [
        FinishedPrediction(T0 + 1, "succeeded", 0.2, 0.01),
        FinishedPrediction(T0 + 9, "failed", 0.4, 0.02),
        FinishedPrediction(T0 + 25, "succeeded", 1.0, 0.0),
        FinishedPrediction(T0 - 5, "succeeded", 9.0, 5.0),  # before the range: left out
    ]
    series = build(T0, T0 + 30, 10, done, [], [], [])
    assert series["t"] == [T0, T0 + 10, T0 + 20]
    assert series["predictions"] == [2, 0, 1] and series["failed"] == [1, 0, 0]
    assert series["requests_per_second"] == [0.2, 0.0, 0.1]
    assert series["latency_p50"] == [0.2, None, 1.0] and series["latency_p99"] == [0.4, None, 1.0]
    assert series["charged"] == pytest.approx([0.03, 0.0, 0.0])


def test_the_range_is_aligned_to_the_step() -> None:
    series = build(T0 + 7, T0 + 31, 10, [], [], [], [])
    assert series["start"] == T0 and series["t"] == [T0, T0 + 10, T0 + 20, T0 + 30]


def test_queue_and_replicas_show_the_peak_of_each_bucket_and_gaps_as_none() -> None:
    samples = [
        Sample(T0 + 1, starting=1, ready=0, queued=4, running=0),
        Sample(T0 + 3, starting=0, ready=1, queued=2, running=1),
        Sample(T0 + 21, starting=0, ready=2, queued=0, running=2),
    ]
    series = build(T0, T0 + 30, 10, [], [], samples, [])
    assert series["queue"] == [4, None, 0]
    assert series["replicas_ready"] == [1, None, 2]
    assert series["replicas_starting"] == [1, None, 0]


def test_a_replicas_cost_is_spread_over_its_life_and_conserved() -> None:
    accounts = [
        account(T0 + 5, T0 + 25, 2.0),  # 5 s, 10 s, 5 s in three buckets
        account(T0 + 12, T0 + 12, 0.5),  # no measurable life: all in its bucket
        account(T0 + 20, None, 1.0),  # still running: spread up to the end of the range
    ]
    series = build(T0, T0 + 30, 10, [], accounts, [], [])
    assert series["replica_cost"] == pytest.approx([0.5, 1.5, 0.5 + 1.0])
    assert sum(series["replica_cost"]) == pytest.approx(3.5)


def test_a_start_is_dated_from_when_it_was_asked_for_and_learns_its_first_prediction() -> None:
    line = Timeline()
    phases = {"fork": 0.01, "setup": 0.2, "ready": 0.3}
    line.on_replica_event(
        "a/b",
        T0 + 10.3,
        "start",
        {"replica": "r1", "tier": "warm-host", "ok": True, "phases": phases},
    )
    line.on_replica_event(
        "a/b", T0 + 11, "first_prediction", {"replica": "r1", "tier": "warm-host", "seconds": 0.05}
    )
    line.on_replica_event("a/b", T0 + 12, "scale", {"direction": "up", "count": 1})
    [start] = line.starts_between("a/b", T0, T0 + 60)
    assert start.at == pytest.approx(T0 + 10) and start.to_dict()["seconds"] == 0.3
    assert start.phases["first_prediction"] == 0.05
    assert line.starts_between("a/b", T0 + 11, T0 + 60) == []


def test_the_timeline_keeps_a_bounded_ring_per_deployment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(timeline_module, "KEEP_SAMPLES", 3)
    line = Timeline()
    status = {"replicas": {"starting": 0, "ready": 1}, "queued": 0, "running": 0}
    for i in range(10):
        line.sample(T0 + i, [("a/b", status), ("c/d", status)])
    assert [s.at for s in line.samples_between("a/b", 0, T0 + 100)] == [T0 + 7, T0 + 8, T0 + 9]
    line.forget("a/b")
    assert line.samples_between("a/b", 0, T0 + 100) == []
    assert len(line.samples_between("c/d", 0, T0 + 100)) == 3
