"""What a replay measured: per deployment (`ModelResult`, straight from the event loop) and for
a whole run (`Result`, what reports and the cost advisor read).

Kept apart from the loop so that every way of producing numbers (a policy replayed tick by tick,
or an always-on dedicated pool evaluated directly) is summarised by the same code, and so
compares like with like: the same delay percentiles, the same billing split.

Units: seconds throughout (GPU-seconds for billing; one replica = one GPU). Delays are the
added delay of each request, dispatch minus arrival (queueing and waiting for starts), service
time excluded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1) of an ascending sequence; 0 when it is empty."""
    if not ordered:
        return 0.0
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@dataclass
class ModelResult:
    """One deployment replayed against one policy."""

    requests: int = 0
    cold: int = 0  # requests that waited for a cold start (replica ready after they arrived)
    host: int = 0  # requests that waited for a start from the warm host (Ember)
    waited: int = 0  # requests that waited for any start (cold, warm-host or scale-out)
    delays: list[float] = field(default_factory=list)  # per request, in arrival order
    billed: float = 0.0  # replica-seconds, starting, idle and draining included
    starting: float = 0.0  # billed seconds spent starting
    busy: float = 0.0  # seconds of service (the sum of service times)
    events: int = 0  # ticks at which the replica count changed
    cold_starts: int = 0
    warm_starts: int = 0  # scale-outs while a replica of the model is loaded
    host_starts: int = 0  # starts from zero from the warm host
    ticks: int = 0  # policy calls
    note: str = ""  # the policy's state worth showing (Ember: its learned windows)
    draining: float = 0.0
    """Busy seconds that replicas told to stop spent finishing their last request (part of
    `busy`: a draining replica stops as soon as its request ends, so it is never idle)."""

    @property
    def idle(self) -> float:
        """Billed seconds neither starting nor serving."""
        return self.billed - self.starting - self.busy


@dataclass
class Result:
    """A whole replay (every deployment of a trace) against one policy, or a dedicated pool."""

    policy: str
    requests: int
    cold: int
    waited: int
    mean_delay: float
    p50_delay: float
    p99_delay: float
    max_delay: float
    billed: float
    starting: float
    busy: float
    events: int
    cold_starts: int
    warm_starts: int
    ticks: int
    per_model: dict[str, dict[str, float]] = field(default_factory=dict)
    host: int = 0
    host_starts: int = 0
    zero_start: str = ""  # what a start from zero cost this policy, e.g. "10 s cold"
    draining: float = 0.0  # busy seconds of replicas told to stop (see ModelResult.draining)

    @property
    def cold_rate(self) -> float:
        """Share of requests that waited for a cold start."""
        return self.cold / self.requests if self.requests else 0.0

    @property
    def host_rate(self) -> float:
        """Share of requests that waited for a start from the warm host."""
        return self.host / self.requests if self.requests else 0.0

    @property
    def waited_rate(self) -> float:
        """Share of requests that waited for any replica start (scale-outs included)."""
        return self.waited / self.requests if self.requests else 0.0

    @property
    def waste(self) -> float:
        """Billed seconds not spent serving: starting plus idle."""
        return self.billed - self.busy

    @property
    def idle(self) -> float:
        """Billed seconds neither starting nor serving."""
        return self.billed - self.starting - self.busy


def summarize(policy: str, results: dict[str, ModelResult], zero_start: str = "") -> Result:
    """Every deployment's numbers together: counts and seconds add up, delay statistics are
    over all requests."""
    delays = sorted(d for r in results.values() for d in r.delays)
    requests = sum(r.requests for r in results.values())
    return Result(
        policy=policy,
        requests=requests,
        cold=sum(r.cold for r in results.values()),
        waited=sum(r.waited for r in results.values()),
        mean_delay=sum(delays) / len(delays) if delays else 0.0,
        p50_delay=percentile(delays, 0.50),
        p99_delay=percentile(delays, 0.99),
        max_delay=delays[-1] if delays else 0.0,
        billed=sum(r.billed for r in results.values()),
        starting=sum(r.starting for r in results.values()),
        busy=sum(r.busy for r in results.values()),
        events=sum(r.events for r in results.values()),
        cold_starts=sum(r.cold_starts for r in results.values()),
        warm_starts=sum(r.warm_starts for r in results.values()),
        host=sum(r.host for r in results.values()),
        host_starts=sum(r.host_starts for r in results.values()),
        zero_start=zero_start,
        ticks=sum(r.ticks for r in results.values()),
        draining=sum(r.draining for r in results.values()),
        per_model={
            model: {
                "requests": r.requests,
                "cold_rate": r.cold / r.requests if r.requests else 0.0,
                "host_rate": r.host / r.requests if r.requests else 0.0,
                "waited_rate": r.waited / r.requests if r.requests else 0.0,
                "billed": r.billed,
                "mean_delay": sum(r.delays) / r.requests if r.requests else 0.0,
                "note": r.note,
            }
            for model, r in results.items()
        },
    )
