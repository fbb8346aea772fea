"""The cost advisor: what a deployment's own recorded traffic would cost under other settings,
or on a dedicated machine, found by replaying it (`control/replay`, the same engine and policy
code as the trace simulator and the live controller). Pure: traffic and prices in, advice out.

Every option is the same requests replayed through Ember's policy with different settings:
what it would bill (replica-seconds x the SKU's per-second price, scaled to a 30-day month),
how many requests would wait for a start from zero, and their added delay. A dedicated
machine is the same requests on an always-on replica at the SKU's dedicated hourly price.

Waiting has a price too, or scaling to zero would always look cheapest: the recommendation is
the option with the lowest bill plus waiting, each second a request waits for a replica priced
at `DELAY_WEIGHT` replica-seconds (policies/costs.py: the same price the live keep-alive
uses). So a replica is kept warm exactly when that costs less than making requests wait for
starts. Where the recommendation still makes more than `COLD_START_TARGET` of requests wait
for a start from zero, the cheapest option that does not is shown beside it
(shared/docs/economics.md: keep cold starts under 5-10% of requests for production
endpoints). Serverless is compared with a dedicated machine on the recommended option.
"""

from __future__ import annotations

import datetime
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ember.control.policies.costs import DELAY_WEIGHT
from ember.control.prices import TOKEN_PRICES, Price
from ember.control.replay import ReplayParams, Request, Result, dedicated, ember_factory, replay
from ember.control.scaling import ScalingSettings

MONTH_SECONDS = 30 * 24 * 3600.0
COLD_START_TARGET = 0.05
IDLE_TIMEOUTS = (0.0, 60.0, 300.0, 900.0, 3600.0)
WINDOW_COVERAGE = 0.8  # a keep-warm window is proposed for the hours holding this much traffic
MAX_WINDOW_HOURS = 16


@dataclass(frozen=True)
class Traffic:
    """A deployment's recorded requests: arrivals in seconds from `epoch`, over `span`."""

    requests: list[Request]
    span: float
    epoch: datetime.datetime
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass
class Option:
    name: str
    changes: dict[str, Any]  # the settings to apply (empty: as deployed)
    apply: str  # how to apply it
    monthly_cost: float  # what it would bill
    waiting_cost: float  # the price of its requests' waiting, per month (DELAY_WEIGHT)
    start_wait_rate: float  # share of requests that waited for a start from zero
    mean_delay: float
    p99_delay: float
    billed_seconds: float

    @property
    def total_cost(self) -> float:
        return self.monthly_cost + self.waiting_cost

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "total_cost": self.total_cost}


@dataclass
class Advice:
    deployment: str
    days: float
    requests: int
    busy_hours_per_day: float
    price: Price
    start_seconds: dict[str, float]
    options: list[Option]
    recommended: Option
    fewer_cold_starts: Option | None
    dedicated: Option | None
    break_even_busy_hours_per_day: float | None
    verdict: str
    token_providers: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["price"] = self.price.to_dict()
        data["options"] = [o.to_dict() for o in self.options]
        data["recommended"] = self.recommended.to_dict()
        data["fewer_cold_starts"] = self.fewer_cold_starts and self.fewer_cold_starts.to_dict()
        data["dedicated"] = self.dedicated and self.dedicated.to_dict()
        return data


def _flags(changes: dict[str, Any]) -> str:
    parts = []
    for key, value in changes.items():
        flag = "--" + key.replace("_", "-")
        parts.append(f'{flag} "{value}"' if isinstance(value, str) else f"{flag} {value:g}")
    return " ".join(parts)


def keep_warm_window(traffic: Traffic) -> str | None:
    """The shortest daily UTC hour range holding `WINDOW_COVERAGE` of the requests, as a
    keep-warm window ("mon-sun 08:00-19:00=1"), or None if traffic is spread over the day."""
    if not traffic.requests:
        return None
    hours = Counter(
        (traffic.epoch + datetime.timedelta(seconds=r.arrival)).hour for r in traffic.requests
    )
    total = len(traffic.requests)
    for length in range(1, MAX_WINDOW_HOURS + 1):
        best = max(range(24), key=lambda s: sum(hours[(s + i) % 24] for i in range(length)))
        if sum(hours[(best + i) % 24] for i in range(length)) >= WINDOW_COVERAGE * total:
            end = (best + length) % 24
            return f"mon-sun {best:02d}:00-{end:02d}:00=1"
    return None


def _option(
    name: str,
    changes: dict[str, Any],
    apply: str,
    result: Result,
    cost: float,
    span: float,
    rate: float,
) -> Option:
    scale = MONTH_SECONDS / span if span else 0.0
    waited = (result.cold + result.host) / result.requests if result.requests else 0.0
    waiting = result.mean_delay * result.requests * DELAY_WEIGHT * rate
    return Option(
        name=name,
        changes=changes,
        apply=apply,
        monthly_cost=cost * scale,
        waiting_cost=waiting * scale,
        start_wait_rate=waited,
        mean_delay=result.mean_delay,
        p99_delay=result.p99_delay,
        billed_seconds=result.billed,
    )


def advise(
    deployment: str,
    traffic: Traffic,
    settings: ScalingSettings,
    price: Price,
    params: ReplayParams,
    warm_host: bool = True,
) -> Advice:
    """Replay `traffic` under the deployed `settings` and the candidates; price them."""
    if traffic.span <= 0:
        raise ValueError("the traffic window must be longer than zero seconds")
    candidates: list[tuple[str, dict[str, Any]]] = [("as deployed", {})]
    if settings.min_instances < 1:
        candidates.append(("keep one replica warm", {"min_instances": 1}))
    to_zero = {"min_instances": 0} if settings.min_instances else {}
    for timeout in IDLE_TIMEOUTS:
        if to_zero or settings.idle_timeout != timeout:
            name = f"scale to zero after {timeout:g} s idle"
            candidates.append((name, {**to_zero, "idle_timeout": timeout}))
    window = keep_warm_window(traffic)
    if window and window not in settings.keep_warm:
        candidates.append((f"keep one warm {window[:-2]} UTC", {**to_zero, "keep_warm": window}))
    options = []
    for name, changes in candidates:
        fields = {**settings.model_dump(), **changes}
        if "keep_warm" in changes:
            fields["keep_warm"] = [*settings.keep_warm, changes["keep_warm"]]
        candidate = ScalingSettings.model_validate(fields)
        factory = ember_factory(candidate, warm_host=warm_host, epoch=traffic.epoch, name=name)
        result = replay(traffic.requests, factory, params, span=traffic.span)
        apply = f"ember scale {deployment} {_flags(changes)}" if changes else "nothing to change"
        cost = result.billed * price.per_second
        options.append(_option(name, changes, apply, result, cost, traffic.span, price.per_second))
    recommended = min(options, key=lambda o: (o.total_cost, o.monthly_cost))
    fewer = None
    if recommended.start_wait_rate > COLD_START_TARGET:
        calm = [o for o in options if o.start_wait_rate <= COLD_START_TARGET]
        fewer = min(calm, key=lambda o: o.monthly_cost) if calm else None

    dedicated_option = None
    break_even = None
    busy = sum(r.service for r in traffic.requests)
    days = traffic.span / 86400.0
    if price.dedicated_hourly is not None:
        result = dedicated(traffic.requests, 1, span=traffic.span, name="dedicated x1")
        cost = result.billed / 3600.0 * price.dedicated_hourly
        dedicated_option = _option(
            "a dedicated machine, always on",
            {},
            f"rent one at ${price.dedicated_hourly:g}/h and point clients at it",
            result,
            cost,
            traffic.span,
            price.per_second,
        )
        if busy > 0:
            # Serverless cost per busy hour on this traffic, against 24 dedicated hours a day.
            per_busy_hour = recommended.billed_seconds * price.per_second / (busy / 3600.0)
            if per_busy_hour > 0:  # at a price of 0, dedicated never breaks even
                break_even = 24 * price.dedicated_hourly / per_busy_hour
    busy_per_day = busy / 3600.0 / days if days else 0.0
    verdict = _verdict(recommended, dedicated_option, busy_per_day, break_even)
    return Advice(
        deployment=deployment,
        days=days,
        requests=len(traffic.requests),
        busy_hours_per_day=busy_per_day,
        price=price,
        start_seconds={"cold": params.cold_start, "warm-host": params.host_start},
        options=options,
        recommended=recommended,
        fewer_cold_starts=fewer,
        dedicated=dedicated_option,
        break_even_busy_hours_per_day=break_even,
        verdict=verdict,
        token_providers=_token_comparison(traffic, recommended.monthly_cost),
    )


def _verdict(
    current: Option, dedicated_option: Option | None, busy_per_day: float, break_even: float | None
) -> str:
    if dedicated_option is None:
        return "no dedicated price for this hardware: set dedicated_hourly to compare"
    if current.monthly_cost <= dedicated_option.monthly_cost:
        return (
            f"serverless: ${current.monthly_cost:,.2f}/month against "
            f"${dedicated_option.monthly_cost:,.2f} dedicated ({busy_per_day:.2f} busy hours a "
            f"day; dedicated wins above {break_even or 0:.1f})"
        )
    return (
        f"dedicated: ${dedicated_option.monthly_cost:,.2f}/month against "
        f"${current.monthly_cost:,.2f} serverless ({busy_per_day:.2f} busy hours a day, above "
        f"the break-even of {break_even or 0:.1f})"
    )


def _token_comparison(traffic: Traffic, monthly_cost: float) -> list[dict[str, Any]]:
    """What the same tokens would cost at hosted per-token prices (LLM deployments)."""
    if not (traffic.input_tokens or traffic.output_tokens):
        return []
    scale = MONTH_SECONDS / traffic.span
    rows = []
    for p in TOKEN_PRICES:
        cost = (
            traffic.input_tokens * p.input_per_million
            + traffic.output_tokens * p.output_per_million
        ) / 1e6
        rows.append(
            {
                "provider": p.provider,
                "model": p.model,
                "monthly_cost": cost * scale,
                "vs_serverless": cost * scale - monthly_cost,
            }
        )
    return sorted(rows, key=lambda r: r["monthly_cost"])
