"""What a replica start costs, in the one unit the scaling policies trade: GPU-seconds.

Keeping a replica idle costs its GPU time, one GPU-second per second. Stopping it saves that,
but the next request that needs it waits for a start. With cold starts of ~10 s (weights onto a
fresh GPU) a long keep-alive is the only defence; with a warm host per deployment (imports done,
weights in host RAM, replicas forked from it: ~1 s for a GPU model, shared/docs/coldstart.md) a
start is cheap, and keeping replicas idle "just in case" is most of the bill. The policies weigh
the two with one price, `DELAY_WEIGHT`, and the start times the runner measures (`StartTimes`).

Pure: no I/O, no clock. Numbers in, numbers out.
"""

from __future__ import annotations

import math
from typing import Final

DELAY_WEIGHT: Final = 180.0
"""GPU-seconds Ember is willing to spend to spare one request one second of waiting for a
replica start: a start of `s` seconds that a request waits for costs `s * (1 + DELAY_WEIGHT)`
GPU-seconds (its own billed start time plus the delay at this price).

This is a price, not a law of nature; 180 (3 GPU-minutes per second of waiting) is the product's
choice. What it means: with a 1 s warm-host start, a deployment with memoryless traffic stays
warm between requests only if they come at least every ~3 minutes on average, and a sparser one
stops at once and makes each request wait ~1 s; with a 10 s cold start (no warm host) the
break-even is ~30 minutes, so the same rule keeps replicas much longer when starts are slow.
For comparison, a fixed 10-minute keep-alive with 10 s cold starts is the break-even choice at
60 GPU-seconds per second of waiting. On the traces in bench/ this price keeps Ember's mean and
p99 added delay at or below a fixed 10-minute keep-alive's while billing well under 70% of its
GPU time (bench/README.md shows the sensitivity); lower it to save more GPU time and accept more
waiting, raise it for the opposite."""

START_SMOOTHING: Final = 0.3
"""Weight of the newest measured start in `StartTimes` (an exponentially weighted mean per
tier): a few starts follow a lasting change (a bigger model, a busier host), one slow outlier
moves the estimate by 30% of its excess."""


def start_cost(seconds: float, delay_weight: float = DELAY_WEIGHT) -> float:
    """GPU-seconds one start of `seconds` costs when a request waits for it: billed start time
    plus the waiting, priced at `delay_weight` GPU-seconds per second."""
    if not (math.isfinite(seconds) and seconds >= 0):
        raise ValueError(f"a start takes a finite number of seconds >= 0: {seconds!r}")
    if not (math.isfinite(delay_weight) and delay_weight >= 0):
        raise ValueError(f"delay_weight must be a finite number >= 0: {delay_weight!r}")
    return seconds * (1.0 + delay_weight)


class StartTimes:
    """How long replica starts of one deployment take, as measured, per start tier ("warm-host",
    "disk", "cold": runtime/base.py `Tier`): an exponentially weighted mean of each.

    Per tier, because the tier kept ready for a deployment can change (a warm host given back
    under memory pressure, a tier set by the user): the keep-alive must price the start the
    next request would actually wait for, not an average over tiers. `None` for a tier until a
    start from it has been measured.
    """

    __slots__ = ("_seconds",)

    def __init__(self) -> None:
        self._seconds: dict[str, float] = {}

    def record(self, tier: str, seconds: float) -> None:
        """Add one measured start: seconds from asking for the replica to it being ready."""
        if not (math.isfinite(seconds) and seconds >= 0):
            raise ValueError(f"a start takes a finite number of seconds >= 0: {seconds!r}")
        previous = self._seconds.get(tier)
        self._seconds[tier] = (
            seconds if previous is None else previous + START_SMOOTHING * (seconds - previous)
        )

    def get(self, tier: str) -> float | None:
        """The smoothed start time of `tier`, or None before one was measured."""
        return self._seconds.get(tier)
