"""Keeps budgets and what has been spent against them, and refuses predictions over budget.

Token spend is what the token's predictions were charged (`metrics.cost`), kept in memory as
predictions end and rebuilt from the database at start. Deployment spend is what its
replicas were billed in the period (live ones up to now), read from the ledger and cached for
`CACHE_SECONDS` so the prediction path stays cheap. The checks themselves are pure
(`policies/budgets.py`).
"""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import Awaitable, Callable

from ember.control.errors import BudgetExceeded
from ember.control.policies.budgets import (
    Budget,
    Period,
    Scope,
    first_refusal,
    period_end,
    period_start,
)
from ember.control.predictions import PredictionState
from ember.control.reports import ReplicaAccount
from ember.store import models as records
from ember.store.db import aware
from ember.store.repository import Store

CACHE_SECONDS = 2.0
PRUNE_ABOVE = 10_000  # spend entries kept before those of past periods are dropped
PERIODS: tuple[Period, ...] = ("day", "month")

Accounts = Callable[[datetime.datetime], Awaitable[list[ReplicaAccount]]]


class BudgetGuard:
    def __init__(
        self,
        store: Store,
        accounts: Accounts,
        wall: Callable[[], datetime.datetime],
    ) -> None:
        self.store = store
        self.accounts = accounts
        self.wall = wall
        self.cache_seconds = CACHE_SECONDS  # a deployment's spend is this fresh, at worst
        self.budgets: dict[str, Budget] = {}
        self._token_spend: dict[tuple[str, Period, datetime.datetime], float] = {}
        self._deployment_spend: dict[tuple[str, datetime.datetime], tuple[float, float]] = {}

    async def load(self) -> None:
        """Budgets, and this month's spend of every token, from the database."""
        records = await asyncio.to_thread(self.store.budgets)
        self.budgets = {r.id: _budget(r) for r in records}
        since = period_start("month", self.wall())
        for row in await asyncio.to_thread(self.store.finished_predictions_since, since):
            cost = (row.metrics or {}).get("cost")
            self._add_token_spend(row.token_id, aware(row.created_at), cost)  # type: ignore[arg-type]

    def on_prediction(self, state: PredictionState, event: str) -> None:
        """A platform listener: a finished prediction's cost counts against its token."""
        if event == "done":
            self._add_token_spend(state.token_id, state.created_at, state.metrics.get("cost"))

    def _add_token_spend(
        self, token_id: str | None, created_at: datetime.datetime, cost: object
    ) -> None:
        if token_id and isinstance(cost, int | float) and cost > 0:
            if len(self._token_spend) > PRUNE_ABOVE:  # forget periods that are over
                month = period_start("month", self.wall())
                self._token_spend = {k: v for k, v in self._token_spend.items() if k[2] >= month}
                self._deployment_spend.clear()
            for period in PERIODS:
                key = (token_id, period, period_start(period, created_at))
                self._token_spend[key] = self._token_spend.get(key, 0.0) + float(cost)

    async def spent(self, budget: Budget, now: datetime.datetime) -> float:
        start = period_start(budget.period, now)
        if budget.scope == "token":
            return self._token_spend.get((budget.target, budget.period, start), 0.0)
        cached = self._deployment_spend.get((budget.target, start))
        if cached is not None and time.monotonic() - cached[0] < self.cache_seconds:
            return cached[1]
        end = period_end(budget.period, now)
        accounts = await self.accounts(start)
        spent = sum(
            a.cost_between(start, min(end, now)) for a in accounts if a.deployment == budget.target
        )
        self._deployment_spend[(budget.target, start)] = (time.monotonic(), spent)
        return spent

    async def check(self, token_id: str | None, deployment: str | None) -> None:
        """Raise BudgetExceeded if a budget of this token or deployment is spent."""
        relevant = [
            b
            for b in self.budgets.values()
            if (b.scope == "token" and b.target == token_id)
            or (b.scope == "deployment" and b.target == deployment)
        ]
        if not relevant:
            return
        now = self.wall()
        spent = {b.id: await self.spent(b, now) for b in relevant}
        refusal = first_refusal(relevant, spent, now)
        if refusal is not None:
            raise BudgetExceeded(refusal)

    def all(self) -> list[Budget]:
        return list(self.budgets.values())

    async def standing(self, budget: Budget) -> tuple[float, datetime.datetime]:
        """(what the budget has spent this period, when the period ends)."""
        now = self.wall()
        return await self.spent(budget, now), period_end(budget.period, now)

    async def add(self, scope: Scope, target: str, period: Period, limit_usd: float) -> Budget:
        record = await asyncio.to_thread(
            self.store.add_budget, scope=scope, target=target, period=period, limit_usd=limit_usd
        )
        budget = self.budgets[record.id] = _budget(record)
        return budget

    async def remove(self, budget_id: str) -> bool:
        self.budgets.pop(budget_id, None)
        return await asyncio.to_thread(self.store.delete_budget, budget_id)


def _budget(record: records.Budget) -> Budget:
    return Budget(
        record.id,
        record.scope,  # type: ignore[arg-type]
        record.target,
        record.period,  # type: ignore[arg-type]
        record.limit_usd,
    )
