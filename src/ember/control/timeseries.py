"""A deployment's recent history as equally spaced buckets, for charts.

Pure: it is handed the finished predictions, replica accounts, samples and starts of a time
range and returns columns (one value per bucket, None where a bucket has nothing to say), the
shape chart libraries take without reshaping.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ember.control.reports import ReplicaAccount
from ember.control.timeline import Sample, StartRecord

# Bucket widths a person reads at a glance; the chosen one gives at most MAX_BUCKETS buckets.
STEPS = (5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400)
MAX_BUCKETS = 120
MOST_BUCKETS_ASKED = 10_000  # an explicit step may not ask for more than this
DAY = 86400
# The longest history one chart covers (a year): an earlier start is moved up to it, which
# bounds the rows a request reads and the work it costs, whatever `since` it names.
MAX_SPAN = 366 * DAY


@dataclass(frozen=True)
class FinishedPrediction:
    """What the charts need of one finished prediction (UNIX seconds; cost in USD)."""

    completed_at: float
    status: str
    total_time: float | None
    cost: float


def choose_step(span: float) -> int:
    """The smallest readable bucket width that keeps the chart within MAX_BUCKETS (the span
    rounded: "the last hour" asked a moment ago is still an hour). Past the widest readable
    width, whole days: however long the span, the buckets stay within MAX_BUCKETS."""
    span = round(span)
    for step in STEPS:
        if span / step <= MAX_BUCKETS:
            return step
    return math.ceil(span / MAX_BUCKETS / DAY) * DAY


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of non-empty values."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def build(
    start: float,
    end: float,
    step: int,
    predictions: Iterable[FinishedPrediction],
    accounts: Iterable[ReplicaAccount],
    samples: Iterable[Sample],
    starts: Iterable[StartRecord],
) -> dict[str, Any]:
    """Columns over [start, end) in buckets of `step` seconds, aligned to multiples of step.

    Requests and latency are counted when predictions finish; queue and replicas are the
    largest sample in a bucket (a burst between samples is what a person wants to see); cost is
    each replica's cost spread evenly over its life.
    """
    first = math.floor(start / step) * step
    count = max(1, math.ceil((end - first) / step))
    times = [first + i * step for i in range(count)]

    def index_floor(at: float) -> int:
        return int((at - first) // step)

    def index(at: float) -> int | None:
        i = index_floor(at)
        return i if 0 <= i < count else None

    latencies: list[list[float]] = [[] for _ in times]
    finished = [0] * count
    failed = [0] * count
    charged = [0.0] * count
    for prediction in predictions:
        i = index(prediction.completed_at)
        if i is None:
            continue
        finished[i] += 1
        failed[i] += prediction.status == "failed"
        charged[i] += prediction.cost
        if prediction.total_time is not None:
            latencies[i].append(prediction.total_time)

    queue: list[int | None] = [None] * count
    ready: list[int | None] = [None] * count
    starting: list[int | None] = [None] * count
    for sample in samples:
        i = index(sample.at)
        if i is None:
            continue
        queue[i] = max(queue[i] or 0, sample.queued)
        ready[i] = max(ready[i] or 0, sample.ready)
        starting[i] = max(starting[i] or 0, sample.starting)

    cost = [0.0] * count
    for account in accounts:  # a live replica's cost so far is spread up to `end`
        born = account.requested_at.timestamp()
        died = account.stopped_at.timestamp() if account.stopped_at else end
        life = died - born
        if life <= 0:
            if (i := index(born)) is not None:
                cost[i] += account.cost
            continue
        for i in range(max(0, index_floor(born)), min(count, index_floor(died) + 1)):
            inside = min(died, times[i] + step) - max(born, times[i])
            cost[i] += account.cost * max(0.0, inside) / life

    return {
        "start": first,
        "end": first + count * step,
        "step": step,
        "t": times,
        "requests_per_second": [n / step for n in finished],
        "predictions": finished,
        "failed": failed,
        "latency_p50": [percentile(v, 50) if v else None for v in latencies],
        "latency_p99": [percentile(v, 99) if v else None for v in latencies],
        "queue": queue,
        "replicas_ready": ready,
        "replicas_starting": starting,
        "replica_cost": cost,
        "charged": charged,
        "cold_starts": [record.to_dict() for record in starts],
    }
