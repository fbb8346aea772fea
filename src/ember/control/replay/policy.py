"""What the replay calls: the `Policy` interface, and the time it is expressed in (`TICK`, the
default `QUIET_TICKS`, `INF` for "never").

Kept apart from the engine and from any one policy so that both depend on it and not on each
other: the engine (engine.py) drives any `Policy`, Ember's adapter (ember_policy.py) and the
benchmark's baselines of the peers (bench/baselines.py) implement one.

Every policy is called once per tick with what the deployment looks like and returns the
replica count it wants. No I/O and no clock: all state is in the object, all time comes in as
arguments (seconds from the start of the replay).
"""

from __future__ import annotations

import math

INF = math.inf
TICK = 1.0
"""Seconds between two policy calls: the live runner's TICK_SECONDS."""
QUIET_TICKS = 120
"""Ticks a quiet deployment keeps ticking before it may skip ahead, and ticks replayed before
its next wake-up, unless its policy says otherwise (`Policy.quiet_ticks`): twice the longest
window any policy replayed averages over (60 s)."""


class Policy:
    """What the replay calls. Subclasses implement `tick`; the rest has safe defaults."""

    name = "policy"
    warm_host = False
    """True when a start from zero forks from a warm host (costs `host_start`, not
    `cold_start`): Ember's warm-host tier. The peers pay the cold start."""
    quiet_ticks = QUIET_TICKS
    """Quiet ticks (no work, nothing starting) after which this policy's state is settled, and
    ticks to replay before its next possible change: at least its longest averaging window."""
    zero_settle_ticks: int | None = None
    """Quiet ticks after which, at zero replicas, it may skip ahead (None: `quiet_ticks`)."""
    can_fast_forward = False
    """True when `fast_forward` can stand in for the ticks replayed before a wake-up."""

    def tick(self, now: float, in_flight: int, queued: int, replicas: int, ready: int) -> int:
        """The replica count wanted now, given requests running and queued, replicas alive
        (ready + starting) and ready."""
        raise NotImplementedError

    def gap(self, seconds: float) -> None:
        """A request ended an idle gap of `seconds` (from the last work to its arrival)."""

    def zero_wake(self, now: float) -> float:
        """At zero replicas with no work: the earliest time this policy could want a replica
        (INF: not before a request comes)."""
        return INF

    def hold_wake(self, now: float, replicas: int) -> float:
        """With no work and `replicas` ready and idle, after a tick that kept them: the earliest
        time this policy could want another count if no request comes. `now` (the default):
        it cannot say, so the replay keeps ticking."""
        return now

    def fast_forward(self, times: list[float], replicas: int) -> None:
        """Bring the state to what ticks at `times` (quiet: no work, `replicas` ready and idle,
        the count kept) would leave, cheaper than ticking. Only called when
        `can_fast_forward`, between a `zero_wake`/`hold_wake` and the wake-up."""
        raise NotImplementedError

    def describe(self) -> str:
        """State worth showing per model at the end of a run (learned windows)."""
        return ""
