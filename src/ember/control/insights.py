"""What the operator reads: the cost report, a deployment's time series, and the advisor.

Every figure comes from the ledger (replica accounts, live ones up to now) and the stored
predictions; the computations themselves are pure (`reports.py`, `timeseries.py`,
`advisor.py`), so this module only gathers their inputs.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Sequence
from typing import Any

from ember.control import timeseries
from ember.control.advisor import Advice, Traffic, advise
from ember.control.deployments import Deployments
from ember.control.errors import BadRequest
from ember.control.ledger import Ledger
from ember.control.prediction_book import PredictionBook
from ember.control.prices import PriceTable
from ember.control.replay import ReplayParams, Request
from ember.control.reports import CostRow, Grouping, PredictionCharge, ReplicaAccount, summarize
from ember.control.timeline import Sample, StartRecord, Timeline
from ember.control.tokens import Tokens
from ember.runtime.base import Tier
from ember.store.db import aware
from ember.store.models import Prediction


def _series(
    start: float,
    end: float,
    step: int,
    rows: Sequence[Prediction],
    accounts: Sequence[ReplicaAccount],
    samples: Sequence[Sample],
    starts: Sequence[StartRecord],
) -> dict[str, Any]:
    """timeseries.build on the stored predictions (run in a thread: it is pure)."""
    finished = [
        timeseries.FinishedPrediction(
            aware(row.completed_at).timestamp(),
            row.status,
            (row.metrics or {}).get("total_time"),
            float((row.metrics or {}).get("cost") or 0.0),
        )
        for row in rows
    ]
    return timeseries.build(start, end, step, finished, accounts, samples, starts)


class Insights:
    def __init__(
        self,
        ledger: Ledger,
        book: PredictionBook,
        deployments: Deployments,
        tokens: Tokens,
        prices: PriceTable,
        timeline: Timeline,
    ) -> None:
        self.ledger = ledger
        self.book = book
        self.store = book.store
        self.deployments = deployments
        self.tokens = tokens
        self.prices = prices
        self.timeline = timeline

    def now(self) -> datetime.datetime:
        return self.ledger.wall()

    async def costs(self, by: Grouping, since: datetime.datetime | None = None) -> list[CostRow]:
        """The cost report: replicas that lived since `since` (live ones up to now) and the
        predictions finished since then, grouped `by`."""
        accounts = await self.ledger.accounts_since(since)
        if since is not None:
            now = self.now()
            accounts = [a.within(since, now) for a in accounts]
        charges = {
            row.id: PredictionCharge(
                row.id,
                row.deployment or f"version:{row.version_id}",
                row.token_id or "(admin)",
                row.status,
                aware(row.created_at),
                row.metrics or {},
            )
            for row in await asyncio.to_thread(self.store.finished_predictions_since, since)
        }
        for state in self.book.finished_since(since):  # perhaps not yet flushed
            charges[state.id] = PredictionCharge(
                state.id,
                state.deployment or f"version:{state.version_id}",
                state.token_id or "(admin)",
                state.status,
                state.created_at,
                state.metrics,
            )
        if by == "token":  # people read token names, not ids
            names = await self.tokens.names()
            for charge in charges.values():
                if charge.token in names:
                    charge.token = f"{names[charge.token]} ({charge.token})"
        hardware_of = {a.deployment: a.hardware for a in accounts}
        return summarize(accounts, charges.values(), by, hardware_of)

    async def timeseries(
        self, owner: str, name: str, since: datetime.datetime, step: int | None = None
    ) -> dict[str, Any]:
        """The deployment's requests, latency, queue, replicas, starts and cost from `since`
        until now, in buckets of `step` seconds (chosen from the span when not given).

        `since` is moved up to at most a year ago (timeseries.MAX_SPAN), and a given `step`
        may not make more than MOST_BUCKETS_ASKED buckets (BadRequest): whatever a caller
        asks, a request reads and computes a bounded amount. The buckets are filled in a
        thread, so that a long history does not hold every other request up."""
        await self.deployments.get(owner, name)  # 404 with what exists if it does not
        key = f"{owner}/{name}"
        now = self.now()
        end = now.timestamp()
        start = max(since.timestamp(), end - timeseries.MAX_SPAN)
        if step and (end - start) / step > timeseries.MOST_BUCKETS_ASKED:
            raise BadRequest(
                f"step={step} gives over {timeseries.MOST_BUCKETS_ASKED:,} buckets: widen it"
            )
        step = step or timeseries.choose_step(end - start)
        since = datetime.datetime.fromtimestamp(start, datetime.UTC)
        rows = await asyncio.to_thread(self.store.finished_predictions_since, since, key)
        accounts = await self.ledger.accounts_since(since, key)
        # The timeline's lists are copied here, on the event loop that changes them.
        samples = self.timeline.samples_between(key, start, end)
        starts = self.timeline.starts_between(key, start, end)
        return await asyncio.to_thread(_series, start, end, step, rows, accounts, samples, starts)

    async def advice(self, owner: str, name: str, days: float = 7.0) -> Advice:
        """Replay the deployment's last `days` of finished predictions under its settings and
        the advisor's candidates (in a thread: a week of busy traffic takes seconds)."""
        deployment, release = await self.deployments.get(owner, name)
        runner = self.deployments.for_deployment(owner, name).runner
        now = self.now()
        since = max(now - datetime.timedelta(days=days), aware(deployment.created_at))
        rows = await asyncio.to_thread(self.store.finished_predictions_since, since)
        requests, tokens_in, tokens_out = [], 0, 0
        for row in rows:
            if row.deployment != f"{owner}/{name}" or row.started_at is None:
                continue
            metrics = row.metrics or {}
            service = metrics.get("predict_time")
            if service is None and row.completed_at is not None:
                service = (row.completed_at - row.started_at).total_seconds()
            arrival = (aware(row.created_at) - since).total_seconds()
            requests.append(Request(max(0.0, arrival), max(0.0, float(service or 0.0))))
            tokens_in += int(metrics.get("input_token_count") or 0)
            tokens_out += int(metrics.get("output_token_count") or 0)
        traffic = Traffic(requests, (now - since).total_seconds(), since, tokens_in, tokens_out)
        measured = runner.start_times
        host = measured.get(Tier.WARM_HOST.value)
        params = ReplayParams(
            cold_start=measured.get(Tier.COLD.value) or measured.get(Tier.DISK.value) or 10.0,
            host_start=host if host is not None else 1.0,
            warm_start=host if host is not None else 0.3,
            max_instances=runner.settings.max_instances,
        )
        price = self.prices.get(release.hardware)
        warm_host = runner.cold_start.tier == Tier.WARM_HOST
        return await asyncio.to_thread(
            advise, f"{owner}/{name}", traffic, runner.settings, price, params, warm_host
        )
