"""The scaling policy with a fake clock: no processes, only observations and decisions."""

from __future__ import annotations

import datetime

import pytest

from ember.control.policies.autoscaling import Autoscaler, Limits, Observation
from ember.control.scaling import ScalingSettings, keep_warm_floor, parse_keep_warm


def limits(**overrides: float) -> Limits:
    values = dict(
        floor=0, ceiling=4, target=1.0, scale_up_delay=0.0, scale_down_delay=60.0, keepalive=300.0
    )
    values.update(overrides)
    return Limits(**values)  # type: ignore[arg-type]


def run(
    scaler: Autoscaler, t: float, in_flight: int, queued: int, replicas: int, bounds: Limits
) -> int:
    scaler.observe(Observation(t, in_flight, queued, replicas))
    return scaler.decide(t, bounds).replicas


def test_a_request_at_zero_starts_a_replica_at_once():
    scaler = Autoscaler()
    decision_time = 1000.0
    assert run(scaler, decision_time, 0, 1, 0, limits()) == 1


def test_a_burst_scales_out_immediately_up_to_max():
    scaler = Autoscaler()
    bounds = limits()
    assert run(scaler, 0.0, 0, 50, 0, bounds) == 4  # 50 waiting, max 4
    assert run(scaler, 1.0, 4, 46, 4, bounds) == 4


def test_scale_up_waits_for_its_delay():
    scaler = Autoscaler()
    bounds = limits(scale_up_delay=10.0)
    assert run(scaler, 0.0, 1, 0, 1, bounds) == 1
    assert run(scaler, 1.0, 1, 3, 1, bounds) == 1  # wants more, but the delay runs
    assert run(scaler, 6.0, 1, 3, 1, bounds) == 1
    assert run(scaler, 11.5, 1, 3, 1, bounds) > 1


def test_scale_in_is_slow_and_never_while_panicking():
    scaler = Autoscaler()
    bounds = limits()
    for t in range(0, 10):
        assert run(scaler, float(t), 4, 6, 4, bounds) == 4
    # the burst is over; the panic window keeps the count for a stable window
    for t in range(10, 60):
        assert run(scaler, float(t), 1, 0, 4, bounds) == 4
    # after that, scale-down still waits its delay before going down
    counts = [run(scaler, float(t), 1, 0, 4, bounds) for t in range(70, 200)]
    assert counts[0] == 4 and counts[-1] == 1
    assert 1 in counts and min(counts) == 1


def test_scale_to_zero_only_after_the_keepalive():
    scaler = Autoscaler()
    bounds = limits(keepalive=120.0)
    run(scaler, 0.0, 1, 0, 1, bounds)
    # idle from t=1: one replica stays warm for the keep-alive, then none
    assert run(scaler, 100.0, 0, 0, 1, bounds) == 1
    assert run(scaler, 119.0, 0, 0, 1, bounds) == 1
    assert run(scaler, 121.0, 0, 0, 1, bounds) == 0


def test_idle_past_keepalive_goes_to_zero_even_right_after_a_burst():
    scaler = Autoscaler()
    bounds = limits(keepalive=2.0, scale_down_delay=0.0)
    for t in range(5):
        assert run(scaler, float(t), 4, 20, 4, bounds) == 4  # a burst, panic mode
    assert run(scaler, 5.0, 0, 0, 4, bounds) == 4  # just went idle: keep-alive runs
    assert run(scaler, 7.5, 0, 0, 4, bounds) == 0  # idle 3.5 s > 2 s: the windows don't matter


def test_floor_and_ceiling_always_win():
    scaler = Autoscaler()
    assert run(scaler, 0.0, 0, 0, 0, limits(floor=2)) == 2
    assert run(scaler, 1.0, 0, 100, 2, limits(floor=2, ceiling=3)) == 3


def test_target_concurrency_divides_demand():
    scaler = Autoscaler()
    assert run(scaler, 0.0, 0, 8, 0, limits(target=4.0)) == 2


@pytest.mark.parametrize(
    ("text", "moment", "expected"),
    [
        ("mon-fri 08:00-19:00=1", "2026-11-23T09:00:00+00:00", 1),  # Monday morning
        ("mon-fri 08:00-19:00=1", "2026-11-22T09:00:00+00:00", 0),  # Sunday
        ("weekdays 08:00-19:00=2", "2026-11-27T18:59:00+00:00", 2),  # Friday evening
        ("weekdays 08:00-19:00=2", "2026-11-27T19:00:00+00:00", 0),
        ("sat 22:00-02:00=1", "2026-11-29T01:00:00+00:00", 1),  # past midnight into Sunday
        ("sat 22:00-02:00=1", "2026-11-30T01:00:00+00:00", 0),  # Monday 01:00
    ],
)
def test_keep_warm_windows(text, moment, expected):
    window = parse_keep_warm(text)
    assert keep_warm_floor([window], datetime.datetime.fromisoformat(moment)) == expected


@pytest.mark.parametrize("text", ["mon-fri 8-19=1", "someday 08:00-19:00=1", "mon 08:00-08:00=1"])
def test_bad_keep_warm_windows_say_how_to_write_them(text):
    with pytest.raises(ValueError, match=r"keep-warm window|day"):
        parse_keep_warm(text)


def test_settings_validate_and_normalise():
    settings = ScalingSettings(
        min_instances=1, max_instances=3, keep_warm=["Weekdays 8:00-19:00=1"]
    )
    assert settings.keep_warm == ["mon,tue,wed,thu,fri 08:00-19:00=1"]
    with pytest.raises(ValueError, match="cannot exceed"):
        ScalingSettings(min_instances=4, max_instances=2)
