"""The hybrid histogram keep-alive policy: pure, so every test is arithmetic on recorded gaps."""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sized

import pytest

from ember.control.policies import costs
from ember.control.policies.keepalive import IdleHistory, KeepAliveWindows

MINUTE = 60.0
HOUR = 3600.0
DEFAULT_KEEPALIVE = 5 * MINUTE


def history_of(gaps: Iterable[float], **settings: float) -> IdleHistory:
    history = IdleHistory(**settings)
    for gap in gaps:
        history.record(gap)
    return history


def periodic_gaps(period: float, jitter: float, count: int, seed: int = 1) -> list[float]:
    """Gaps of a job that runs every `period` seconds, +- `jitter` (seeded, so deterministic)."""
    rng = random.Random(seed)
    return [period + rng.uniform(-jitter, jitter) for _ in range(count)]


def sporadic_gaps(count: int, seed: int = 7) -> list[float]:
    """A heavy-tailed mix: some short gaps, many spread over hours, a Pareto tail past 4 h."""
    rng = random.Random(seed)
    gaps = []
    for _ in range(count):
        u = rng.random()
        if u < 0.2:
            gaps.append(rng.uniform(1 * MINUTE, 30 * MINUTE))
        elif u < 0.7:
            gaps.append(rng.uniform(30 * MINUTE, 3 * HOUR))
        else:
            gaps.append(rng.paretovariate(1.5) * 4 * HOUR)
    return gaps


def test_thin_history_falls_back_to_the_default_keepalive():
    history = history_of(periodic_gaps(10 * MINUTE, 30, 9))
    windows = history.windows(DEFAULT_KEEPALIVE)
    assert windows == KeepAliveWindows(0.0, DEFAULT_KEEPALIVE, "default", 9)
    assert windows.warm_at(0) and windows.warm_at(DEFAULT_KEEPALIVE)
    assert not windows.warm_at(DEFAULT_KEEPALIVE + 1)
    history.record(10 * MINUTE)  # the tenth gap is enough to trust the histogram
    assert history.windows(DEFAULT_KEEPALIVE).mode == "histogram"


def test_periodic_traffic_unloads_then_prewarms_just_before_the_next_request():
    history = history_of(periodic_gaps(10 * MINUTE, 30, 200))
    windows = history.windows(DEFAULT_KEEPALIVE)
    assert windows.mode == "histogram"
    assert windows.samples == 200
    # Head bin [9, 10) min -> upper edge 10 min x 0.9, floored to a bin edge: 9 min.
    assert 8 * MINUTE < windows.prewarm <= 9 * MINUTE
    assert windows.prewarm % MINUTE == 0
    # Tail bin [10, 11) min -> upper edge 11 min x 1.1 = 12.1 min.
    assert 11 * MINUTE < windows.warm_until <= 12.5 * MINUTE
    assert windows.warm_until == pytest.approx(11 * MINUTE * 1.1)
    assert not windows.warm_at(0)
    assert not windows.warm_at(5 * MINUTE)
    assert windows.warm_at(10 * MINUTE)
    assert all(windows.warm_at(gap) for gap in periodic_gaps(10 * MINUTE, 30, 500, seed=2))
    assert not windows.warm_at(13 * MINUTE)


def test_short_period_keeps_the_replica_loaded_instead_of_reloading():
    # 0.9 x the 1-minute head edge is under one bin: unloading would save nothing.
    windows = history_of(periodic_gaps(30, 10, 50)).windows(DEFAULT_KEEPALIVE)
    assert windows.mode == "histogram"
    assert windows.prewarm == 0
    assert windows.keepalive == pytest.approx(1 * MINUTE * 1.1)
    assert windows.warm_at(0) and windows.warm_at(40)


def test_sporadic_heavy_tailed_gaps_are_uncertain_and_never_below_the_default():
    gaps = sporadic_gaps(400)
    out_of_range = sum(gap >= 4 * HOUR for gap in gaps)
    assert 0 < out_of_range < len(gaps) / 2  # the mix really has a tail, but a minority
    windows = history_of(gaps).windows(DEFAULT_KEEPALIVE)
    assert windows.mode == "uncertain"
    assert windows.prewarm == 0
    assert windows.keepalive >= DEFAULT_KEEPALIVE
    # Ember's deviation from the paper: warm until the in-range tail, capped at the range.
    in_range = sorted(gap for gap in gaps if gap < 4 * HOUR)
    assert in_range[int(0.98 * len(in_range))] <= windows.keepalive <= 4 * HOUR
    # An operator default above the learned tail is respected.
    assert history_of(gaps).windows(4 * HOUR).keepalive == 4 * HOUR


def test_uncertain_keepalive_is_capped_at_the_range_but_not_below_the_default():
    spread = [minute * MINUTE + 30 for minute in range(0, 240, 2)]  # evenly over the range
    history = history_of([*spread, *[239.5 * MINUTE] * 3])  # the top 2% in the last bin
    assert history.windows(DEFAULT_KEEPALIVE).mode == "uncertain"
    assert history.windows(DEFAULT_KEEPALIVE).keepalive == 4 * HOUR
    assert history.windows(6 * HOUR).keepalive == 6 * HOUR


def test_mostly_out_of_range_gaps_use_the_forecast():
    gaps = periodic_gaps(6 * HOUR, 20 * MINUTE, 40, seed=3)
    gaps[::4] = [3 * MINUTE] * len(gaps[::4])  # a quarter in range: still mostly out of range
    windows = history_of(gaps).windows(DEFAULT_KEEPALIVE)
    assert windows.mode == "predicted"
    assert windows.samples == 40
    assert windows.prewarm == pytest.approx(0.85 * 6 * HOUR, rel=0.04)
    assert windows.keepalive == pytest.approx(0.3 * windows.prewarm / 0.85)
    assert windows.warm_at(6 * HOUR)
    assert not windows.warm_at(4 * HOUR)
    assert not windows.warm_at(8 * HOUR)


def test_forecast_follows_a_change_of_period_within_a_few_gaps():
    history = history_of([6 * HOUR] * 40)
    assert history.windows(DEFAULT_KEEPALIVE).warm_at(6 * HOUR)
    for _ in range(8):
        history.record(12 * HOUR)
    windows = history.windows(DEFAULT_KEEPALIVE)
    assert windows.mode == "predicted"
    assert windows.warm_at(12 * HOUR)
    assert not windows.warm_at(6 * HOUR)


def test_predicted_keepalive_is_at_least_one_bin():
    windows = history_of([130.0] * 20, range_seconds=120).windows(DEFAULT_KEEPALIVE)
    assert windows.mode == "predicted"
    assert windows.prewarm == pytest.approx(0.85 * 130)
    assert windows.keepalive == MINUTE  # 0.3 x 130 s = 39 s is raised to one bin


def test_exactly_half_out_of_range_is_not_predicted():
    history = history_of([10 * MINUTE] * 10 + [6 * HOUR] * 10)
    assert history.windows(DEFAULT_KEEPALIVE).mode == "histogram"
    history.record(6 * HOUR)
    assert history.windows(DEFAULT_KEEPALIVE).mode == "predicted"


@pytest.mark.parametrize("outlier", [3 * HOUR, 30 * HOUR])
def test_a_single_outlier_barely_moves_a_representative_histogram(outlier: float):
    gaps = periodic_gaps(10 * MINUTE, 30, 200)
    before = history_of(gaps).windows(DEFAULT_KEEPALIVE)
    after = history_of([*gaps[:100], outlier, *gaps[100:]]).windows(DEFAULT_KEEPALIVE)
    assert after.mode == "histogram"
    assert after.samples == before.samples + 1
    assert after.prewarm == before.prewarm
    assert after.warm_until == pytest.approx(before.warm_until, abs=MINUTE * 1.1)


def test_round_trip_through_json_gives_identical_windows():
    for gaps in (
        periodic_gaps(10 * MINUTE, 30, 5),
        periodic_gaps(10 * MINUTE, 30, 200),
        sporadic_gaps(400),
        periodic_gaps(6 * HOUR, 20 * MINUTE, 50),
    ):
        history = history_of(gaps, recent=8)
        restored = IdleHistory.from_dict(json.loads(json.dumps(history.to_dict())))
        assert restored.to_dict() == history.to_dict()
        for default in (0.0, DEFAULT_KEEPALIVE, 6 * HOUR):
            assert restored.windows(default) == history.windows(default)
        # The restored history keeps learning exactly like the original.
        history.record(7 * HOUR)
        restored.record(7 * HOUR)
        assert restored.windows(DEFAULT_KEEPALIVE) == history.windows(DEFAULT_KEEPALIVE)


def test_from_dict_rejects_payloads_that_do_not_fit():
    data = history_of([10 * MINUTE] * 20).to_dict()
    with pytest.raises(ValueError):
        IdleHistory.from_dict({**data, "version": 2})
    with pytest.raises(ValueError):
        IdleHistory.from_dict({**data, "counts": data["counts"][:-1]})
    with pytest.raises(ValueError):
        IdleHistory.from_dict({**data, "recent": [MINUTE]})


def test_bad_inputs_raise_instead_of_skewing_the_history():
    history = IdleHistory()
    for gap in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            history.record(gap)
    assert history.samples == 0
    with pytest.raises(ValueError):
        history.windows(-1.0)
    with pytest.raises(ValueError):
        IdleHistory(bin_seconds=0)
    with pytest.raises(ValueError):
        IdleHistory(bin_seconds=60, range_seconds=30)


def test_memory_is_bounded_by_bins_plus_recent_whatever_the_traffic():
    history = IdleHistory(recent=32)
    rng = random.Random(11)
    for _ in range(100_000):
        history.record(rng.expovariate(1 / (3 * HOUR)))  # ~26% out of range
    assert history.samples == 100_000
    assert history.bins == 240
    containers = [getattr(history, name) for name in IdleHistory.__slots__]
    sizes = [len(c) for c in containers if isinstance(c, Sized)]
    assert sizes and max(sizes) <= history.bins
    assert sum(sizes) <= 2 * history.bins + 32  # a count and a sum per bin, the recent ring
    assert len(history.to_dict()["recent"]) == 32


def test_partial_last_bin_when_the_range_is_not_whole_bins():
    history = history_of([620.0] * 20, bin_seconds=60, range_seconds=630)
    assert history.bins == 11  # the last one is [600, 630)
    windows = history.windows(DEFAULT_KEEPALIVE)
    assert windows.mode == "histogram"
    # Both edges are clipped to the range (630 s): 0.9 x 630 floored to a bin, 1.1 x 630.
    assert windows.prewarm == 540
    assert windows.warm_until == pytest.approx(693.0)
    assert windows.warm_at(620.0)


def test_warm_at_treats_a_busy_deployment_as_warm_and_window_ends_as_inclusive():
    windows = KeepAliveWindows(prewarm=100.0, keepalive=50.0, mode="histogram", samples=10)
    assert windows.warm_at(-1.0)
    assert not windows.warm_at(99.9)
    assert windows.warm_at(100.0) and windows.warm_at(150.0)
    assert not windows.warm_at(150.1)


# --- Replay: learned windows against a fixed keep-alive on the same arrivals. ---


def warm_seconds(windows: KeepAliveWindows, gap: float) -> float:
    """Seconds a replica spends warm and idle during one gap (the request ends the idle time)."""
    start, end = windows.prewarm, windows.warm_until
    return max(0.0, min(gap, end) - start)


def replay(gaps: list[float], learned: bool) -> tuple[int, float, int]:
    """Cold starts, warm-idle seconds, and cold starts met after the history stopped being thin,
    over a sequence of gaps (requests take no time).

    The learned policy decides each gap from the history before it, then records it, as the
    control plane would; the fixed policy keeps every replica warm for 10 minutes.
    """
    fixed = KeepAliveWindows(0.0, 10 * MINUTE, "fixed", 0)
    history = IdleHistory()
    cold, warm, cold_once_learned = 0, 0.0, 0
    for gap in gaps:
        windows = history.windows(10 * MINUTE) if learned else fixed
        if not windows.warm_at(gap):
            cold += 1
            cold_once_learned += windows.mode not in ("default", "fixed")
        warm += warm_seconds(windows, gap)
        history.record(gap)
    return cold, warm, cold_once_learned


@pytest.mark.parametrize(
    "period, jitter",
    [(2 * MINUTE, 20), (10 * MINUTE, 30), (45 * MINUTE, 2 * MINUTE)],
    ids=["2min", "10min", "45min"],
)
def test_learned_windows_beat_a_fixed_10_minute_keepalive_on_periodic_traffic(
    period: float, jitter: float
):
    gaps = periodic_gaps(period, jitter, 2_000, seed=5)
    learned_cold, learned_warm, cold_once_learned = replay(gaps, learned=True)
    fixed_cold, fixed_warm, _ = replay(gaps, learned=False)
    assert learned_cold <= fixed_cold
    assert learned_warm < fixed_warm
    # Only the first requests, decided on the default while history is thin, can be cold.
    assert cold_once_learned == 0
    assert learned_cold <= 10


# --- Cost-aware windows: what a start costs decides how long idling is worth it. ---

START = 1.0  # seconds: a start from the warm host
COST = costs.start_cost(START)  # GPU-seconds such a start costs when a request waits for it


def poisson_gaps(mean: float, count: int, seed: int = 3) -> list[float]:
    rng = random.Random(seed)
    return [rng.expovariate(1 / mean) for _ in range(count)]


def brute_force_cost(gaps: list[float], keepalive: float, start_cost: float) -> float:
    """Expected cost per gap, gap by gap: idle until the request or the keep-alive's end, and a
    start the request waits for when it comes later."""
    return sum(min(g, keepalive) + (start_cost if g > keepalive else 0.0) for g in gaps) / len(gaps)


def test_start_cost_is_billed_start_time_plus_waiting_at_the_delay_price():
    assert costs.start_cost(1.0, 180.0) == 181.0
    assert costs.start_cost(0.0) == 0.0
    assert COST == START * (1 + costs.DELAY_WEIGHT)
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            costs.start_cost(bad)
    with pytest.raises(ValueError):
        costs.start_cost(1.0, -1.0)


def test_without_a_start_time_the_windows_are_unchanged():
    for gaps in (periodic_gaps(10 * MINUTE, 30, 200), sporadic_gaps(400), poisson_gaps(HOUR, 50)):
        history = history_of(gaps)
        assert history.windows(DEFAULT_KEEPALIVE, None) == history.windows(DEFAULT_KEEPALIVE)
        assert history.windows(DEFAULT_KEEPALIVE).mode != "cost"


def test_thin_history_keeps_warm_for_what_a_start_costs_at_most():
    history = history_of([5 * MINUTE] * 3)
    windows = history.windows(DEFAULT_KEEPALIVE, START)
    assert windows == KeepAliveWindows(0.0, min(DEFAULT_KEEPALIVE, COST), "default", 3)
    # a slow (cold) start is worth more than the default: the operator's default caps it
    assert history.windows(DEFAULT_KEEPALIVE, 10.0).keepalive == DEFAULT_KEEPALIVE


@pytest.mark.parametrize("mean", [20.0, 90.0, 400.0, 20 * MINUTE, 2 * HOUR])
def test_memoryless_traffic_stays_warm_only_when_requests_come_faster_than_a_start_costs(
    mean: float,
):
    """Poisson arrivals: the chance of a request in the next second never changes, so either
    idling is worth it all along (mean gap below the start's cost) or not at all."""
    windows = history_of(poisson_gaps(mean, 2_000)).windows(DEFAULT_KEEPALIVE, START)
    assert windows.mode == "cost" and windows.prewarm == 0
    if mean < COST / 1.5:
        assert windows.keepalive >= 3 * mean  # warm through almost every gap
    elif mean > 1.5 * COST:
        assert windows.keepalive == 0  # stop at once; every request waits ~START
    # blind to the start's cost, the windows keep even the sparse ones warm for more than a
    # mean gap after every request (the histogram's tail: ~4.6 mean gaps, up to its range)
    learned = history_of(poisson_gaps(mean, 2_000)).windows(DEFAULT_KEEPALIVE)
    if mean > 1.5 * COST:
        assert learned.warm_until - learned.prewarm > mean


@pytest.mark.parametrize("seed", range(5))
def test_the_chosen_keepalive_is_the_cheapest_in_hindsight(seed: int):
    """Exact at bin edges: no keep-alive on a fine grid does better on the same gaps than the
    chosen one (beyond the within-bin resolution)."""
    rng = random.Random(seed)
    gaps = [
        rng.choice(
            [rng.uniform(0.5, 20), rng.expovariate(1 / 200), rng.uniform(20 * MINUTE, 40 * MINUTE)]
        )
        for _ in range(500)
    ]
    history = history_of(gaps)
    windows = history.windows(DEFAULT_KEEPALIVE, START)
    assert windows.mode == "cost"
    chosen = brute_force_cost(gaps, windows.keepalive, COST)
    assert history.keepalive_cost(windows.keepalive, COST) == pytest.approx(chosen)
    grid = [0.0, *(k * 5.0 for k in range(1, 12 * 60))]  # 5 s steps to 1 h
    best = min(brute_force_cost(gaps, k, COST) for k in grid)
    edges = [0.0, *(k * MINUTE for k in range(1, 61))]
    best_on_edges = min(brute_force_cost(gaps, k, COST) for k in edges)
    assert chosen == pytest.approx(best_on_edges)
    assert chosen <= best + MINUTE  # a bin's width of idle time per gap at most


def test_keepalive_cost_is_exact_at_bin_edges():
    gaps = [*poisson_gaps(150, 300), 5 * HOUR, 6 * HOUR]
    history = history_of(gaps)
    for keepalive in (0.0, MINUTE, 3 * MINUTE, 17 * MINUTE, 4 * HOUR):
        assert history.keepalive_cost(keepalive, COST) == pytest.approx(
            brute_force_cost(gaps, keepalive, COST)
        )
    assert IdleHistory().keepalive_cost(MINUTE, COST) == 0.0


def test_slower_starts_keep_replicas_longer():
    history = history_of(poisson_gaps(5 * MINUTE, 1_000))
    keepalives = [history.windows(DEFAULT_KEEPALIVE, s).keepalive for s in (0.3, 1, 3, 10, 30)]
    assert keepalives == sorted(keepalives)
    assert keepalives[0] == 0 and keepalives[-1] >= 30 * MINUTE


def test_a_higher_delay_price_keeps_replicas_longer():
    history = history_of(poisson_gaps(4 * MINUTE, 1_000))
    cheap = history.windows(DEFAULT_KEEPALIVE, START, delay_weight=30)
    dear = history.windows(DEFAULT_KEEPALIVE, START, delay_weight=1_000)
    assert cheap.keepalive == 0 and dear.keepalive >= 20 * MINUTE


def test_periodic_traffic_keeps_its_prewarm_when_it_is_the_cheaper_choice():
    """Every 10 min +- 30 s: a pre-warm window of ~3 min per period beats staying warm 10 min,
    and beats a 1 s start per request at 181 GPU-s each (and its waiting)."""
    history = history_of(periodic_gaps(10 * MINUTE, 30, 200))
    windows = history.windows(DEFAULT_KEEPALIVE, START)
    assert windows == history.windows(DEFAULT_KEEPALIVE)  # the learned pre-warm windows
    assert windows.mode == "histogram" and windows.prewarm > 0
    # with nearly free starts, starting on demand is cheaper than any idle window
    free = history.windows(DEFAULT_KEEPALIVE, 0.01)
    assert free == KeepAliveWindows(0.0, 0.0, "cost", 200)


def test_hour_scale_periods_are_cheaper_to_start_on_demand():
    """The "predicted" window stays warm 0.3x the forecast (hours) per gap: with 1 s starts,
    not worth it; with a slow cold start, still not, at this price."""
    history = history_of(periodic_gaps(6 * HOUR, 10 * MINUTE, 40))
    assert history.windows(DEFAULT_KEEPALIVE).mode == "predicted"
    assert history.windows(DEFAULT_KEEPALIVE, START) == KeepAliveWindows(0.0, 0.0, "cost", 40)


def test_payloads_saved_without_sums_still_load():
    gaps = poisson_gaps(3 * MINUTE, 400)
    history = history_of(gaps)
    old = {key: value for key, value in history.to_dict().items() if key != "sums"}
    restored = IdleHistory.from_dict(old)
    assert restored.samples == history.samples
    # each bin's gaps at its middle: costs within half a bin per gap of the exact ones
    for keepalive in (0.0, MINUTE, 5 * MINUTE):
        assert restored.keepalive_cost(keepalive, COST) == pytest.approx(
            history.keepalive_cost(keepalive, COST), abs=MINUTE / 2
        )
    with pytest.raises(ValueError):
        IdleHistory.from_dict({**history.to_dict(), "sums": [1.0]})
    with pytest.raises(ValueError):
        IdleHistory.from_dict({**history.to_dict(), "sums": [-1.0] * history.bins})
