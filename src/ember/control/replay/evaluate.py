"""Whole traffic in, one `Result` out: `replay` runs recorded requests through a scaling policy,
`dedicated` prices the same requests on an always-on pool. This is the entry point for callers
that hold a deployment's own request log (the cost advisor) rather than a benchmark trace.

Why both: the advisor's question is "what would this traffic cost, and how long would it wait,
under these settings, and against simply renting N GPUs for the month". Both answers come back
in the same `Result`, summarised by the same code, so they compare directly.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ember.control.replay.engine import ReplayParams, run_model, zero_start_label
from ember.control.replay.policy import Policy
from ember.control.replay.results import ModelResult, Result, summarize


@dataclass(frozen=True, slots=True)
class Request:
    """One recorded request: when it arrived (seconds from the replay's start, its epoch), how
    long a replica was busy with it, and optionally which model or deployment it was for
    (requests of different models are replayed as separate deployments)."""

    arrival: float
    service: float
    model: str | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.arrival) and self.arrival >= 0):
            raise ValueError(f"arrival must be a finite number of seconds >= 0: {self.arrival!r}")
        if not (math.isfinite(self.service) and self.service >= 0):
            raise ValueError(f"service must be a finite number of seconds >= 0: {self.service!r}")


def _deployments(requests: Iterable[Request]) -> dict[str, tuple[list[float], list[float]]]:
    """Per model (in order of name; "" for requests without one), arrivals in order and their
    service times. At least one deployment, so that an empty log still bills its floor."""
    rows: dict[str, list[tuple[float, float]]] = {}
    for request in requests:
        rows.setdefault(request.model or "", []).append((request.arrival, request.service))
    if not rows:
        rows[""] = []
    out: dict[str, tuple[list[float], list[float]]] = {}
    for model in sorted(rows):
        ordered = sorted(rows[model], key=lambda row: row[0])  # stable: ties keep their order
        out[model] = ([a for a, _ in ordered], [s for _, s in ordered])
    return out


def _span(deployments: dict[str, tuple[list[float], list[float]]], span: float | None) -> float:
    if span is not None:
        if not (math.isfinite(span) and span >= 0):
            raise ValueError(f"span must be a finite number of seconds >= 0: {span!r}")
        return float(span)
    return max(
        (
            a + s
            for arrivals, services in deployments.values()
            for a, s in zip(arrivals, services, strict=True)
        ),
        default=0.0,
    )


def replay(
    requests: Iterable[Request],
    policy_factory: Callable[[ReplayParams], Policy],
    params: ReplayParams | None = None,
    *,
    span: float | None = None,
    name: str | None = None,
) -> Result:
    """Replay `requests` through a fresh policy per deployment (`policy_factory(params)`, e.g.
    `ember_factory(settings, epoch=...)`, or a baseline of bench/baselines.py).

    Billing covers [0, span] (default span: the last request's arrival plus service), extended
    to the last request's end if that is later. `name` labels the result (default: the
    policy's). Replicas per deployment are capped at `params.max_instances`: keep it at least
    the settings' max_instances."""
    params = params or ReplayParams()
    deployments = _deployments(requests)
    end = _span(deployments, span)
    results: dict[str, ModelResult] = {}
    policy: Policy | None = None
    for model, (arrivals, services) in deployments.items():
        policy = policy_factory(params)
        results[model] = run_model(arrivals, services, policy, params, end)
    assert policy is not None  # there is always one deployment
    return summarize(name or policy.name, results, zero_start_label(policy, params))


def dedicated(
    requests: Iterable[Request],
    replicas: int = 1,
    *,
    span: float | None = None,
    name: str | None = None,
) -> Result:
    """`replicas` per deployment, always on and ready for the whole span: billed = span x
    replicas per deployment (extended to the last request's end if the queue runs past the
    span), no starts, and the delay each request spends queueing for a free replica (FIFO, a
    request takes the replica that frees first), the same statistics as `replay`'s."""
    if replicas < 1:
        raise ValueError(f"a dedicated pool has at least one replica: {replicas!r}")
    deployments = _deployments(requests)
    end = _span(deployments, span)
    results: dict[str, ModelResult] = {}
    for model, (arrivals, services) in deployments.items():
        free = [0.0] * replicas  # when each replica is next free (a heap)
        delays = [0.0] * len(arrivals)
        last_done = 0.0
        for j, (arrival, service) in enumerate(zip(arrivals, services, strict=True)):
            at = free[0]
            start = arrival if at <= arrival else at
            delays[j] = start - arrival
            done = start + service
            heapq.heapreplace(free, done)
            if done > last_done:
                last_done = done
        results[model] = ModelResult(
            requests=len(arrivals),
            delays=delays,
            billed=replicas * max(end, last_done),
            busy=float(sum(services)),
            note=f"{replicas} always on",
        )
    return summarize(name or f"dedicated x{replicas}", results, "none: always on")
