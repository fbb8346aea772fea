"""The replay core (ember.control.replay) through its own API: `Request` records, `replay` with
Ember under explicit `ScalingSettings` (min instances, idle timeout, keep-warm windows by wall
time), `dedicated` pools, and the skipping that makes it fast equalling ticking every second.
The benchmark around it (bench/simulate.py) is tested in tests/unit/test_simulator.py."""

from __future__ import annotations

import datetime
import math
import random
import sys

import pytest

from tests.support.paths import BENCH

sys.path.insert(0, str(BENCH))

from baselines import POLICIES

from ember.control import replay as rp
from ember.control.policies.autoscaling import Autoscaler
from ember.control.policies.keepalive import IdleHistory
from ember.control.replay import ReplayParams, Request, dedicated, ember_factory, replay
from ember.control.scaling import ScalingSettings

HOUR = 3600.0
MONDAY = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)  # a Monday, 00:00 UTC
SATURDAY = MONDAY + datetime.timedelta(days=5)


def requests_at(*arrivals: float, service: float = 1.0, model: str | None = None):
    return [Request(a, service, model) for a in arrivals]


def poisson(mean_gap: float, count: int, seed: int = 0, service: float = 2.0) -> list[Request]:
    rng = random.Random(seed)
    out, t = [], 0.0
    for _ in range(count):
        t += rng.expovariate(1 / mean_gap)
        out.append(Request(t, rng.uniform(0.5, 2 * service)))
    return out


class Recording(rp.Policy):
    """Another policy, unchanged, with every call to `tick` written down."""

    def __init__(self, inner: rp.Policy) -> None:
        self.inner = inner
        self.name, self.warm_host = inner.name, inner.warm_host
        self.quiet_ticks, self.zero_settle_ticks = inner.quiet_ticks, inner.zero_settle_ticks
        self.can_fast_forward = inner.can_fast_forward
        self.calls: list[tuple[float, int, int]] = []  # (now, replicas, wanted)

    def tick(self, now: float, in_flight: int, queued: int, replicas: int, ready: int) -> int:
        wanted = self.inner.tick(now, in_flight, queued, replicas, ready)
        self.calls.append((now, replicas, wanted))
        return wanted

    def gap(self, seconds: float) -> None:
        self.inner.gap(seconds)

    def zero_wake(self, now: float) -> float:
        return self.inner.zero_wake(now)

    def hold_wake(self, now: float, replicas: int) -> float:
        return self.inner.hold_wake(now, replicas)

    def fast_forward(self, times: list[float], replicas: int) -> None:
        self.inner.fast_forward(times, replicas)


def test_percentile_is_nearest_rank():
    values = list(range(1, 101))
    assert rp.percentile(values, 0.50) == 50
    assert rp.percentile(values, 0.99) == 99
    assert rp.percentile([3.0], 0.99) == 3.0
    assert rp.percentile([], 0.50) == 0.0


@pytest.mark.parametrize(
    "arrival, service", [(-1.0, 1.0), (math.inf, 1.0), (math.nan, 1.0), (0.0, -0.5)]
)
def test_a_request_needs_finite_non_negative_times(arrival: float, service: float):
    with pytest.raises(ValueError):
        Request(arrival, service)


def test_one_request_at_zero_waits_for_embers_warm_host():
    result = replay(requests_at(30.0, service=2.0), POLICIES["Ember"])
    assert result.policy == "Ember" and result.zero_start == "1 s host"
    assert result.requests == 1 and result.host == result.waited == 1 and result.cold == 0
    assert result.mean_delay == result.p99_delay == result.max_delay == 1.0
    assert (result.host_starts, result.cold_starts, result.warm_starts) == (1, 0, 0)
    assert result.busy == 2.0 and result.starting == 1.0
    # the billing split adds up: starting + busy + idle
    assert result.idle == pytest.approx(result.billed - 3.0) and result.idle >= 0
    assert result.waste == pytest.approx(result.starting + result.idle)


class Scripted(rp.Policy):
    """Two replicas until `until`, then none: the busy ones drain."""

    def __init__(self, until: float) -> None:
        self.until = until

    def tick(self, now: float, in_flight: int, queued: int, replicas: int, ready: int) -> int:
        return 2 if 0 <= now < self.until else 0


def test_the_bill_splits_into_starting_busy_idle_and_draining():
    result = replay(requests_at(0.0, 0.0, service=60.0), lambda p: Scripted(20.0))
    # both start cold at 0, serve 10-70; told to stop at 20, they drain until 70
    assert (result.cold_starts, result.cold, result.events) == (2, 2, 2)
    assert result.billed == pytest.approx(140.0) and result.starting == pytest.approx(20.0)
    assert result.busy == 120.0 and result.idle == pytest.approx(0.0)
    assert result.draining == pytest.approx(100.0)  # part of busy, never idle


def test_each_model_is_its_own_deployment_with_its_own_policy():
    made: list[rp.Policy] = []

    def factory(p: ReplayParams) -> rp.Policy:
        made.append(POLICIES["fixed 10 min"](p))
        return made[-1]

    traffic = requests_at(0.0, 500.0, model="b") + requests_at(1.0, model="a")
    result = replay(traffic, factory, span=HOUR)
    assert len(made) == 2 and set(result.per_model) == {"a", "b"}
    assert result.requests == 3 and result.per_model["b"]["requests"] == 2
    assert result.cold == 2  # each deployment's first request waits for its own cold start
    assert result.per_model["a"]["cold_rate"] == 1.0 and result.per_model["b"]["cold_rate"] == 0.5
    assert result.billed == pytest.approx(sum(m["billed"] for m in result.per_model.values()))


def test_the_span_defaults_to_the_last_request_end_and_is_validated():
    lazy = replay(requests_at(0.0, 100.0, service=3.0), POLICIES["Ember"])
    fixed = replay(requests_at(0.0, 100.0, service=3.0), POLICIES["fixed 10 min"])
    assert fixed.billed == pytest.approx(103.0)  # kept past the last request: to the span
    assert lazy.billed <= fixed.billed
    with pytest.raises(ValueError):
        replay([], POLICIES["Ember"], span=-1.0)


def test_ember_takes_explicit_settings_as_the_runner_does():
    settings = ScalingSettings(
        min_instances=1, max_instances=3, target_concurrency=2, idle_timeout=120,
        scale_up_delay=5, scale_down_delay=30,
    )  # fmt: skip
    policy = ember_factory(settings, name="candidate")(ReplayParams(max_instances=3))
    assert isinstance(policy, rp.Ember) and policy.name == "candidate"
    assert isinstance(policy.scaler, Autoscaler) and isinstance(policy.history, IdleHistory)
    assert policy.warm_host and policy.start_seconds == ReplayParams().host_start
    limits = policy.limits(1, 120.0)
    assert (limits.floor, limits.ceiling, limits.target) == (1, 3, 2.0)
    assert (limits.scale_up_delay, limits.scale_down_delay, limits.keepalive) == (5, 30, 120)
    assert limits.scale_out_seconds is None  # a set idle_timeout: configured delays only
    assert not policy.learn and policy.windows.keepalive == 120
    cold = ember_factory(ScalingSettings(), warm_host=False)(ReplayParams())
    assert not cold.warm_host and cold.start_seconds == ReplayParams().cold_start
    with pytest.raises(ValueError, match="max_instances"):  # the replay would cap it
        ember_factory(ScalingSettings(max_instances=8))(ReplayParams(max_instances=4))


@pytest.mark.parametrize("exact", [False, True])
def test_min_instances_one_never_scales_below_one_and_bills_the_whole_span(exact: bool):
    span = 12 * HOUR
    traffic = poisson(40 * 60.0, 15, seed=1)  # sparse: the learned policy would stop at once
    params = ReplayParams(max_instances=1, exact=exact)
    settings = ScalingSettings(min_instances=1, max_instances=1)
    recorded: list[Recording] = []

    def factory(p: ReplayParams) -> rp.Policy:
        recorded.append(Recording(rp.make_ember(p, settings)))
        return recorded[-1]

    result = replay(traffic, factory, params, span=span)
    calls = recorded[0].calls
    assert all(wanted >= 1 for _, _, wanted in calls)
    assert all(replicas >= 1 for now, replicas, _ in calls if now >= 0)  # up before the span
    assert result.billed == pytest.approx(span)  # the whole span, not a second more
    assert result.starting == 0 and result.idle == pytest.approx(span - result.busy)
    assert result.waited == result.cold == result.host == 0 and result.max_delay == 0
    assert result.events == result.host_starts == result.cold_starts == result.warm_starts == 0
    learned = replay(traffic, POLICIES["Ember"], ReplayParams(max_instances=1), span=span)
    assert learned.billed < 0.1 * result.billed and learned.host > 0


def test_min_instances_with_no_traffic_bill_the_floor_for_the_span():
    factory = ember_factory(ScalingSettings(min_instances=2, max_instances=4))
    result = replay([], factory, span=30 * 24 * HOUR)
    assert result.requests == 0 and result.billed == pytest.approx(2 * 30 * 24 * HOUR)
    assert result.ticks < 1000  # a steady floor is skipped, not ticked every second


@pytest.mark.parametrize("exact", [False, True])
def test_a_keep_warm_window_applies_only_inside_its_hours(exact: bool):
    settings = ScalingSettings(max_instances=1, idle_timeout=0, keep_warm=["mon-fri 08:00-10:00=1"])
    traffic = requests_at(9 * HOUR, 12 * HOUR)  # one inside the window, one after it
    params = ReplayParams(max_instances=1, exact=exact)
    weekday = replay(traffic, ember_factory(settings, epoch=MONDAY), params, span=24 * HOUR)
    # warm from 08:00 to 10:00 (the window), then 2 s for the request at noon
    assert weekday.billed == pytest.approx(2 * HOUR + 2.0)
    assert weekday.host == weekday.waited == 1  # only the one outside the window waited
    assert weekday.max_delay == 1.0 and weekday.mean_delay == 0.5
    assert weekday.starting == pytest.approx(2.0)  # the window's start (1 s) and noon's
    saturday = replay(traffic, ember_factory(settings, epoch=SATURDAY), params, span=24 * HOUR)
    assert saturday.billed == pytest.approx(4.0) and saturday.host == 2
    # a naive epoch is UTC; an epoch that starts inside the window is warm from time 0
    naive = ember_factory(settings, epoch=datetime.datetime(2024, 1, 1, 9, 0))
    inside = replay(requests_at(10.0), naive, params, span=HOUR)
    assert inside.waited == 0 and inside.billed == pytest.approx(HOUR)  # until 10:00


def test_keep_warm_windows_cross_midnight_and_keep_their_count():
    settings = ScalingSettings(max_instances=2, idle_timeout=0, keep_warm=["daily 22:00-02:00=2"])
    result = replay([], ember_factory(settings, epoch=MONDAY), span=48 * HOUR)
    # 00:00-02:00 (Sunday's window), 22:00-02:00, 22:00-24:00: 8 hours of two replicas
    assert result.billed == pytest.approx(2 * 8 * HOUR)


def test_keep_warm_windows_need_the_replays_wall_time():
    settings = ScalingSettings(keep_warm=["mon-fri 08:00-10:00=1"])
    with pytest.raises(ValueError, match="epoch"):
        ember_factory(settings)(ReplayParams())


def test_idle_timeout_candidates_trade_billing_for_waiting():
    traffic = poisson(10 * 60.0, 200, seed=3)
    results = {
        timeout: replay(traffic, ember_factory(ScalingSettings(idle_timeout=timeout)))
        for timeout in (0.0, 600.0, 3600.0)
    }
    billed = [results[t].billed for t in (0.0, 600.0, 3600.0)]
    waited = [results[t].waited_rate for t in (0.0, 600.0, 3600.0)]
    assert billed == sorted(billed) and waited == sorted(waited, reverse=True)
    assert results[0.0].waited_rate > 0.95 and results[3600.0].waited_rate < 0.1


def test_dedicated_bills_span_times_replicas_and_only_queues():
    traffic = requests_at(0.0, 0.0, 0.0, 50.0, service=10.0)
    one = dedicated(traffic, 1, span=HOUR)
    assert one.billed == HOUR and one.busy == 40.0 and one.idle == HOUR - 40.0
    assert (one.p50_delay, one.max_delay) == (0.0, 20.0)  # FIFO: 0, 10, 20, then 0
    assert one.mean_delay == 7.5
    assert one.waited == one.cold == one.host == one.events == 0
    assert one.cold_starts + one.host_starts + one.warm_starts == 0 and one.starting == 0
    assert one.policy == "dedicated x1" and one.zero_start == "none: always on"
    three = dedicated(traffic, 3, span=HOUR)
    assert three.billed == 3 * HOUR and three.max_delay == 0.0
    # per deployment: two models, two pools
    two_models = dedicated(traffic + requests_at(5.0, model="other"), 2, span=HOUR)
    assert two_models.billed == 2 * 2 * HOUR and set(two_models.per_model) == {"", "other"}
    # a queue that runs past the span is billed to its end
    late = dedicated(requests_at(0.0, 0.0, service=600.0), 1, span=900.0)
    assert late.billed == 1200.0
    assert dedicated([], 2, span=HOUR).billed == 2 * HOUR
    with pytest.raises(ValueError):
        dedicated(traffic, 0)


@pytest.mark.parametrize("replicas", [1, 2])
def test_dedicated_equals_an_always_on_ember(replicas: int):
    """The pool evaluated directly and Ember held at min = max = N through the event loop give
    the same bill and the same delays."""
    rng = random.Random(replicas)
    traffic, t = [], 0.0
    for _ in range(300):
        t += rng.expovariate(1 / 8.0)
        traffic.append(Request(t, rng.uniform(1.0, 15.0)))
    pool = dedicated(traffic, replicas, span=t + 60)
    settings = ScalingSettings(min_instances=replicas, max_instances=replicas, idle_timeout=0)
    held = replay(
        traffic, ember_factory(settings), ReplayParams(max_instances=replicas), span=t + 60
    )
    assert pool.mean_delay > 0  # queueing happened
    for name in ("billed", "busy", "mean_delay", "p50_delay", "p99_delay", "max_delay"):
        assert getattr(held, name) == pytest.approx(getattr(pool, name), abs=1e-6), name
    assert held.waited == held.events == 0


def mixed_traffic(
    seed: int, hours: float = 6.0, bursts: bool = True
) -> tuple[list[float], list[float]]:
    """Periodic requests (alone: the learned pre-warm), bursts (scale-outs, delays, panics) and
    sparse singles, for checking that skipping ahead equals ticking every second."""
    rng = random.Random(seed)
    end = hours * HOUR
    rows = []
    t = rng.uniform(0, 300)
    while t < end:  # every 20 min, +-20 s
        rows.append((t, rng.uniform(0.5, 3.0)))
        t += 20 * 60 + rng.uniform(-20, 20)
    t = rng.uniform(0, 1800) if bursts else end
    while t < end:  # bursts of 1-12 at ~2 req/s, every ~40 min
        s = t
        for _ in range(rng.randint(1, 12)):
            rows.append((s, rng.lognormvariate(math.log(2.0), 0.6)))
            s += rng.expovariate(2.0)
        t = s + rng.expovariate(1 / 2400)
    rows.sort()
    return [a for a, _ in rows], [s for _, s in rows]


EPOCH_5AM = MONDAY + datetime.timedelta(hours=5)
VARIANTS = {
    "learned": (ScalingSettings(max_instances=4), {}),
    "no warm host": (ScalingSettings(max_instances=4), {"warm_host": False}),
    "idle_timeout": (ScalingSettings(max_instances=4, idle_timeout=900), {}),
    "min_instances": (ScalingSettings(max_instances=3, min_instances=1), {}),
    "keep_warm": (
        ScalingSettings(
            max_instances=4, keep_warm=["mon-fri 06:00-07:30=2", "daily 09:15-09:45=1"]
        ),
        {"epoch": EPOCH_5AM},
    ),
    "slow scale-in": (
        ScalingSettings(max_instances=4, scale_down_delay=600, target_concurrency=2),
        {},
    ),
    "prewarm lead": (ScalingSettings(max_instances=4), {"params": {"prewarm_lead": 10.0}}),
    "wake on queue": (ScalingSettings(max_instances=4), {"params": {"wake_on_queue": True}}),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_skipping_ahead_equals_ticking_every_second(variant: str):
    settings, options = VARIANTS[variant]
    options = dict(options)
    extra = options.pop("params", {})
    for seed, bursts in ((1, True), (2, True), (3, False)):
        arrivals, services = mixed_traffic(seed, bursts=bursts)
        outcomes = []
        for exact in (False, True):
            params = ReplayParams(exact=exact, **extra)
            policy = rp.make_ember(params, settings, **options)
            outcomes.append(rp.run_model(arrivals, services, policy, params, 6 * HOUR))
        fast, slow = outcomes
        assert slow.ticks > 2 * fast.ticks, (variant, seed)
        # the same numbers to the last bit: ticks fall on the same moments either way
        fast.ticks = slow.ticks
        assert fast == slow, (variant, seed)


def test_the_variants_exercise_what_they_are_for():
    """Guards the test above against checking nothing: pre-warms, scale-outs, floors."""

    def run(variant: str, seed: int = 1, bursts: bool = True) -> rp.ModelResult:
        arrivals, services = mixed_traffic(seed, bursts=bursts)
        settings, options = VARIANTS[variant]
        options = dict(options)
        params = ReplayParams(**options.pop("params", {}))
        policy = rp.make_ember(params, settings, **options)
        return rp.run_model(arrivals, services, policy, params, 6 * HOUR)

    assert run("learned").warm_starts > 0 and run("learned").host_starts > 0
    assert run("prewarm lead", 3, bursts=False).note.startswith("histogram")
    assert run("learned", 3, bursts=False).note.startswith("histogram")
    assert run("keep_warm").billed > run("learned").billed + 2 * HOUR
    assert run("min_instances").billed >= 6 * HOUR


def test_a_few_thousand_requests_take_few_policy_calls():
    """What keeps `replay` well under a second on a deployment's log: sparse traffic is not
    ticked through second by second (ticks are what cost; a few microseconds each)."""
    traffic = poisson(1000.0, 3000, seed=5)  # ~35 days
    learned = replay(traffic, POLICIES["Ember"])
    assert learned.ticks < 15 * len(traffic)
    floor = replay(traffic, ember_factory(ScalingSettings(min_instances=1, max_instances=4)))
    assert floor.ticks < 80 * len(traffic)
    assert floor.billed >= max(r.arrival + r.service for r in traffic)  # + scale-outs
