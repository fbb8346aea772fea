"""Cost reports from the ledger: pure sums over replica accounts and finished predictions.

Replica accounts carry what was billed (wall time x rate, split into starting, busy, idle and
draining); predictions carry what was charged to each (its busy share and its share of the cold
start it waited for, in `metrics.cost`), its tokens and output units where the predictor
reported them. Grouped by deployment, day or hardware, a row's cost is what its replicas were
billed; by token, only predictions can be attributed to a token, so a row's cost is what its
predictions were charged and one more row, "(overhead)", holds the rest (idle-warm time and the
starts nobody waited for), so every grouping adds up to the same total.

With a `since`, a replica that lived partly before it counts for the part after (its states
taken as spread evenly over its life); grouped by day, a replica counts on the day it was asked
for.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

Grouping = Literal["deployment", "day", "hardware", "token"]
GROUPINGS: tuple[Grouping, ...] = ("deployment", "day", "hardware", "token")
OVERHEAD = "(overhead)"
# Output units a predictor may report with record_metric(name, amount).
UNIT_METRICS = {
    "image_count": "image",
    "audio_seconds": "audio second",
    "video_seconds": "video second",
}


@dataclass
class ReplicaAccount:
    id: str
    deployment: str
    hardware: str
    requested_at: datetime.datetime
    starting_seconds: float
    busy_seconds: float
    idle_seconds: float
    draining_seconds: float
    rate: float
    cost: float
    stopped_at: datetime.datetime | None = None  # None: still running

    def share_between(self, start: datetime.datetime, end: datetime.datetime) -> float:
        """The part of its life inside [start, end), from 0 to 1."""
        stop = self.stopped_at or end
        life = (stop - self.requested_at).total_seconds()
        inside = (min(stop, end) - max(self.requested_at, start)).total_seconds()
        if life <= 0:
            return 1.0 if start <= self.requested_at < end else 0.0
        return min(1.0, max(0.0, inside) / life)

    def cost_between(self, start: datetime.datetime, end: datetime.datetime) -> float:
        """Its cost prorated to the part of its life inside [start, end)."""
        return self.cost * self.share_between(start, end)

    def within(self, start: datetime.datetime, end: datetime.datetime) -> ReplicaAccount:
        """The account prorated to [start, end): every figure scaled by the share of its life
        inside (its states are taken as spread evenly over it)."""
        share = self.share_between(start, end)
        return replace(
            self,
            starting_seconds=self.starting_seconds * share,
            busy_seconds=self.busy_seconds * share,
            idle_seconds=self.idle_seconds * share,
            draining_seconds=self.draining_seconds * share,
            cost=self.cost * share,
        )


@dataclass
class PredictionCharge:
    id: str
    deployment: str
    token: str
    status: str
    created_at: datetime.datetime
    metrics: dict[str, Any]


@dataclass
class CostRow:
    key: str
    requests: int = 0
    failed: int = 0
    replicas: int = 0  # replica starts (each one a cold start of some tier)
    gpu_seconds: float = 0.0  # replica wall time billed
    busy_seconds: float = 0.0
    idle_seconds: float = 0.0
    cold_start_seconds: float = 0.0
    draining_seconds: float = 0.0
    cost: float = 0.0
    charged_to_predictions: float = 0.0
    cold_start_cost: float = 0.0
    idle_cost: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    units: dict[str, float] = field(default_factory=dict)

    @property
    def cost_per_request(self) -> float | None:
        return self.cost / self.requests if self.requests else None

    @property
    def cost_per_million_tokens(self) -> float | None:
        tokens = self.input_tokens + self.output_tokens
        return self.cost / tokens * 1e6 if tokens else None

    @property
    def utilization(self) -> float | None:
        return self.busy_seconds / self.gpu_seconds if self.gpu_seconds else None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(
            cost_per_request=self.cost_per_request,
            cost_per_million_tokens=self.cost_per_million_tokens,
            utilization=self.utilization,
            cost_per_unit={
                unit: self.cost / amount for unit, amount in self.units.items() if amount
            },
        )
        return data


def _replica_key(account: ReplicaAccount, by: Grouping) -> str:
    if by == "day":
        return account.requested_at.date().isoformat()
    if by == "hardware":
        return account.hardware
    return account.deployment


def summarize(
    replicas: Iterable[ReplicaAccount],
    predictions: Iterable[PredictionCharge],
    by: Grouping,
    hardware_of: dict[str, str] | None = None,
) -> list[CostRow]:
    """One row per group, biggest cost first, and the total last (key "total").
    `hardware_of` maps deployments to their hardware (for requests grouped by hardware)."""
    rows: dict[str, CostRow] = {}
    total = CostRow("total")

    def row(key: str) -> CostRow:
        return rows.setdefault(key, CostRow(key))

    for account in replicas:
        targets = [total] if by == "token" else [row(_replica_key(account, by)), total]
        for target in targets:
            target.replicas += 1
            target.gpu_seconds += (
                account.starting_seconds
                + account.busy_seconds
                + account.idle_seconds
                + account.draining_seconds
            )
            target.busy_seconds += account.busy_seconds
            target.idle_seconds += account.idle_seconds
            target.cold_start_seconds += account.starting_seconds
            target.draining_seconds += account.draining_seconds
            target.cost += account.cost
            target.cold_start_cost += account.starting_seconds * account.rate
            target.idle_cost += account.idle_seconds * account.rate
    for prediction in predictions:
        if by == "token":
            key = prediction.token
        elif by == "day":
            key = prediction.created_at.date().isoformat()
        elif by == "hardware":
            key = (hardware_of or {}).get(prediction.deployment, "unknown")
        else:
            key = prediction.deployment
        metrics = prediction.metrics
        charged = float(metrics.get("cost") or 0.0)
        for target in (row(key), total):
            target.requests += 1
            target.failed += prediction.status == "failed"
            target.charged_to_predictions += charged
            target.input_tokens += int(metrics.get("input_token_count") or 0)
            target.output_tokens += int(metrics.get("output_token_count") or 0)
            for name, unit in UNIT_METRICS.items():
                if metrics.get(name):
                    target.units[unit] = target.units.get(unit, 0.0) + float(metrics[name])
        if by == "token":
            rows[key].cost += charged
            rows[key].cold_start_cost += float(metrics.get("cold_start_cost") or 0.0)
    if by == "token":
        overhead = total.cost - total.charged_to_predictions
        if overhead > 0:
            extra = row(OVERHEAD)
            extra.cost = overhead
            extra.idle_cost = total.idle_cost
    ordered = sorted(rows.values(), key=lambda r: (-r.cost, r.key))
    return [*ordered, total]
