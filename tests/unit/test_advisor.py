"""The cost advisor on synthetic traffic: its numbers are direct replays, and it recommends
keeping a replica warm exactly when that is cheaper than paying for starts."""

from __future__ import annotations

import datetime

import pytest

from ember.control.advisor import MONTH_SECONDS, Traffic, advise, keep_warm_window
from ember.control.prices import Price
from ember.control.replay import ReplayParams, Request, dedicated, ember_factory, replay
from ember.control.scaling import ScalingSettings

EPOCH = datetime.datetime(2026, 11, 2, tzinfo=datetime.UTC)  # a Monday
DAY = 86400.0
H100 = Price("gpu-h100", 0.001525, 2.01, "test")


def steady(gap: float, service: float = 1.0, span: float = DAY) -> Traffic:
    arrivals = [i * gap for i in range(int(span // gap))]
    return Traffic([Request(a, service) for a in arrivals], span, EPOCH)


def test_frequent_requests_with_slow_starts_are_advised_to_keep_a_replica_warm() -> None:
    # Requests every 30 s, starts of 60 s: scaling to zero restarts all the time.
    traffic = steady(30.0)
    params = ReplayParams(cold_start=60.0, host_start=60.0, max_instances=1)
    advice = advise("ember/chat", traffic, ScalingSettings(), H100, params, warm_host=False)
    by_name = {o.name: o for o in advice.options}
    zero = by_name["scale to zero after 0 s idle"]
    warm = by_name["keep one replica warm"]
    # Scaling to zero bills less, but two requests in three wait up to a minute for a start.
    assert zero.monthly_cost < warm.monthly_cost and zero.start_wait_rate > 0.5
    assert warm.total_cost < zero.total_cost
    assert advice.recommended.total_cost <= warm.total_cost
    assert advice.recommended.start_wait_rate <= 0.01


def test_sparse_requests_are_advised_to_scale_to_zero() -> None:
    traffic = steady(3600.0)  # one an hour, 10 s starts
    params = ReplayParams(cold_start=10.0, host_start=1.0, max_instances=1)
    advice = advise("ember/rare", traffic, ScalingSettings(min_instances=1), H100, params)
    warm = next(o for o in advice.options if o.name == "as deployed")
    assert advice.recommended.total_cost < warm.total_cost / 10
    assert advice.recommended.changes["min_instances"] == 0
    assert advice.recommended.apply.startswith("ember scale ember/rare --min-instances 0")


def test_the_break_even_call_agrees_with_direct_replays_of_both_options() -> None:
    traffic = steady(20.0, service=15.0)  # busy most of the day: dedicated should win
    params = ReplayParams(cold_start=10.0, host_start=1.0, max_instances=2)
    settings = ScalingSettings(max_instances=2)
    advice = advise("ember/busy", traffic, settings, H100, params)
    scale = MONTH_SECONDS / traffic.span
    chosen = settings.model_copy(update=advice.recommended.changes)
    serverless = replay(traffic.requests, ember_factory(chosen, epoch=EPOCH), params, span=DAY)
    always_on = dedicated(traffic.requests, 1, span=DAY)
    expected = serverless.billed * H100.per_second * scale
    assert advice.recommended.monthly_cost == pytest.approx(expected)
    assert advice.dedicated is not None
    assert advice.dedicated.monthly_cost == pytest.approx(always_on.billed / 3600 * 2.01 * scale)
    dedicated_wins = always_on.billed / 3600 * 2.01 < serverless.billed * H100.per_second
    assert advice.verdict.startswith("dedicated" if dedicated_wins else "serverless")
    assert dedicated_wins and advice.busy_hours_per_day > advice.break_even_busy_hours_per_day


def test_light_traffic_stays_serverless_and_without_a_dedicated_price_says_so() -> None:
    traffic = steady(600.0)
    params = ReplayParams(cold_start=10.0, host_start=1.0, max_instances=1)
    advice = advise("ember/light", traffic, ScalingSettings(), H100, params)
    assert advice.verdict.startswith("serverless")
    unpriced = Price("gpu-t4", 0.000225, None, "test")
    advice = advise("ember/light", traffic, ScalingSettings(), unpriced, params)
    assert advice.dedicated is None and "dedicated_hourly" in advice.verdict


def test_a_keep_warm_window_covers_the_busy_hours() -> None:
    office = [
        Request(d * DAY + h * 3600 + m * 60, 1.0)
        for d in range(5)
        for h in range(9, 17)
        for m in range(0, 60, 5)
    ]
    traffic = Traffic(office, 5 * DAY, EPOCH)
    assert keep_warm_window(traffic) == "mon-sun 09:00-16:00=1"
    params = ReplayParams(cold_start=10.0, host_start=1.0, max_instances=1)
    advice = advise("ember/office", traffic, ScalingSettings(), H100, params)
    window = next(o for o in advice.options if "keep_warm" in o.changes)
    assert window.apply == 'ember scale ember/office --keep-warm "mon-sun 09:00-16:00=1"'


def test_token_heavy_traffic_is_compared_with_hosted_per_token_prices() -> None:
    base = steady(60.0)
    traffic = Traffic(base.requests, base.span, EPOCH, input_tokens=10**6, output_tokens=10**6)
    params = ReplayParams(cold_start=10.0, host_start=1.0, max_instances=1)
    advice = advise("ember/llm", traffic, ScalingSettings(), H100, params)
    groq = next(r for r in advice.token_providers if r["provider"] == "Groq")
    assert groq["monthly_cost"] == pytest.approx((0.59 + 0.79) * 30)
