"""The scaling policy with a fake clock: no processes, only observations and decisions."""

from __future__ import annotations

import datetime

import pytest

from ember.control.policies.autoscaling import Autoscaler, Limits, Observation
from ember.control.policies.costs import DELAY_WEIGHT, StartTimes, start_cost
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


def test_work_between_two_observations_counts_as_busy():
    """5 ms predictions at 20/s: almost no observation sees one running, but each says when
    the last one ended; the deployment is not idle and keeps its replica."""
    scaler = Autoscaler()
    bounds = limits(keepalive=2.0)
    run(scaler, 0.0, 1, 0, 1, bounds)
    for t in range(1, 30):
        scaler.observe(Observation(float(t), 0, 0, 1, idle_since=t - 0.05))
        assert scaler.decide(float(t), bounds).replicas == 1, t
    scaler.observe(Observation(32.0, 0, 0, 1, idle_since=28.95))  # the traffic stopped
    assert scaler.decide(32.0, bounds).replicas == 0


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


def test_one_request_waiting_behind_a_busy_replica_gets_a_replica_at_once():
    """Queue-driven scale-out: no sustained burst needed (the averaged windows would wait for
    one), because a scale-out while the model is loaded costs less than a service time."""
    scaler = Autoscaler()
    bounds = limits()
    for t in range(0, 120):  # a steady, lightly loaded replica
        assert run(scaler, float(t), int(t % 4 == 0), 0, 1, bounds) == 1
    assert run(scaler, 120.0, 1, 1, 1, bounds) == 2  # one waits: a second replica now
    assert run(scaler, 121.0, 2, 3, 2, bounds) == 4  # what is outstanding, up to the ceiling
    assert run(scaler, 122.0, 2, 9, 4, limits(ceiling=4)) == 4


def test_queue_driven_scale_out_still_respects_the_scale_up_delay():
    scaler = Autoscaler()
    bounds = limits(scale_up_delay=5.0)
    assert run(scaler, 0.0, 1, 0, 1, bounds) == 1
    assert run(scaler, 1.0, 1, 1, 1, bounds) == 1
    assert run(scaler, 6.0, 1, 1, 1, bounds) == 2


def test_limits_without_start_costs_behave_as_before():
    bounds = limits()
    assert bounds.scale_out_seconds is None and bounds.delay_weight == DELAY_WEIGHT
    assert Autoscaler.scale_down_delay(bounds) == bounds.scale_down_delay


def test_an_extra_replica_is_kept_for_as_long_as_getting_it_back_would_cost():
    """Ski rental per extra replica: idle up to the GPU-seconds a scale-out costs (its start
    time billed plus the request's wait at the delay price), never less than scale_down_delay."""
    cheap = limits(scale_down_delay=10.0, scale_out_seconds=0.8, delay_weight=100.0)
    hold = start_cost(0.8, 100.0)
    assert Autoscaler.scale_down_delay(cheap) == pytest.approx(80.8)
    assert Autoscaler.scale_down_delay(limits(scale_out_seconds=0.1)) == 60.0  # the floor

    scaler = Autoscaler()
    for t in range(10):  # a burst: two replicas busy
        assert run(scaler, float(t), 2, 0, 2, cheap) == 2
    counts = {t: run(scaler, float(t), 1, 0, 2, cheap) for t in range(10, 400)}
    # the 60 s window still averages the burst; then the wish to go down must hold `hold` s
    first_down = min(t for t, n in counts.items() if n == 1)
    assert 60 + hold - 2 <= first_down <= 70 + hold + 2
    assert all(n == 2 for t, n in counts.items() if t < first_down)


def test_idle_past_a_zero_keepalive_stops_every_replica_at_the_next_tick():
    """The cost-aware keep-alive may be 0 (a start from the warm host is cheaper than idling):
    the deployment goes to zero as soon as it has no work, whatever the replica count."""
    scaler = Autoscaler()
    bounds = limits(keepalive=0.0, scale_out_seconds=0.8)
    assert run(scaler, 0.0, 2, 0, 2, bounds) == 2
    assert run(scaler, 1.0, 0, 0, 2, bounds) == 0


def test_start_times_are_smoothed_per_tier():
    times = StartTimes()
    assert times.get("warm-host") is None
    times.record("warm-host", 1.0)
    times.record("cold", 12.0)
    assert times.get("warm-host") == 1.0 and times.get("cold") == 12.0
    times.record("warm-host", 2.0)  # one slow fork moves the estimate by 30% of its excess
    assert times.get("warm-host") == pytest.approx(1.3)
    for _ in range(20):
        times.record("warm-host", 0.5)
    assert times.get("warm-host") == pytest.approx(0.5, abs=0.01)
    assert times.get("cold") == 12.0  # the other tier's estimate is its own
    with pytest.raises(ValueError):
        times.record("cold", -1.0)


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
