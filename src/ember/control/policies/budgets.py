"""Spend limits: pure checks of what has been spent in a budget's current period.

A budget caps what one API token's predictions are charged (each end user with their own
token: "user pays"), or what one deployment's replicas are billed, per UTC day or calendar
month (UTC). A request is refused once its budget is spent — a prediction's cost is only
known when it ends, so the request that crosses the limit still runs and the next one is
refused — with a message naming the budget and when it resets.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Literal

Period = Literal["day", "month"]
Scope = Literal["token", "deployment"]


@dataclass(frozen=True)
class Budget:
    id: str
    scope: Scope
    target: str  # token id, or deployment "owner/name"
    period: Period
    limit_usd: float


def period_start(period: Period, moment: datetime.datetime) -> datetime.datetime:
    moment = moment.astimezone(datetime.UTC)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    return day if period == "day" else day.replace(day=1)


def period_end(period: Period, moment: datetime.datetime) -> datetime.datetime:
    start = period_start(period, moment)
    if period == "day":
        return start + datetime.timedelta(days=1)
    return (start + datetime.timedelta(days=32)).replace(day=1)


@dataclass(frozen=True)
class Refusal:
    budget: Budget
    spent: float
    resets_at: datetime.datetime

    @property
    def message(self) -> str:
        who = (
            f"API token {self.budget.target}"
            if self.budget.scope == "token"
            else f"deployment {self.budget.target}"
        )
        per = "day" if self.budget.period == "day" else "month"
        return (
            f"the {per}ly budget of ${self.budget.limit_usd:g} for {who} is spent "
            f"(${self.spent:.4f} this {per}; budget {self.budget.id}); it resets at "
            f"{self.resets_at.isoformat()}. Raise or remove it with `ember budget`."
        )


def first_refusal(
    budgets: list[Budget], spent: dict[str, float], now: datetime.datetime
) -> Refusal | None:
    """The first budget whose spend this period (`spent`, by budget id) has reached its
    limit, or None when the request may run."""
    for budget in budgets:
        used = spent.get(budget.id, 0.0)
        if used >= budget.limit_usd:
            return Refusal(budget, used, period_end(budget.period, now))
    return None
