"""Per-deployment keep-alive and pre-warm windows learned from idle gaps.

This is the hybrid histogram policy of "Serverless in the Wild" (Shahrad et al., ATC'20),
adapted to GPU replicas. For every deployment we keep a histogram of *idle gaps*: the time from
when the deployment last had no work to the arrival of its next request. The histogram's shape
tells us how long keeping a replica warm is worth it:

* thin history              -> "default":   keep warm for the operator's default keep-alive;
* mostly gaps beyond range  -> "predicted": forecast the next gap from recent long gaps and be
                                            warm only around the forecast;
* concentrated histogram    -> "histogram": unload right after the work, reload just before the
                                            5th percentile, stay warm until past the 99th;
* spread-out histogram      -> "uncertain": stay warm from the start, until the 99th percentile
                                            (never less than the default keep-alive).

Those windows answer "how long until the next request is unlikely", which is the right question
when a start is expensive (a 10 s cold start onto a fresh GPU). When the caller says what a start
costs (``windows(default, start_seconds=...)``: e.g. ~1 s from a warm host that holds the
weights in host RAM, shared/docs/coldstart.md), the question becomes "is keeping this replica idle
cheaper than starting it again", and the answer is a *cost-aware* keep-alive (mode "cost"):

* a start from zero costs ``start_seconds`` of billed GPU time plus ``start_seconds`` of delay
  for the request that waits, priced at ``delay_weight`` GPU-seconds per second of delay
  (``costs.DELAY_WEIGHT``, 180, by default): ``C = start_seconds * (1 + delay_weight)``
  GPU-seconds, about 3 minutes for a 1 s start;
* keeping a replica warm for ``K`` seconds after going idle costs ``min(gap, K)`` per gap, and
  every gap longer than ``K`` pays ``C``; the keep-alive is the ``K`` that minimises the
  expected cost per gap over the recorded gaps (exact at bin edges, from per-bin sums), which is
  where the conditional chance of a request arriving per second of waiting drops below ``1/C``;
* the histogram's pre-warm windows (periodic traffic) are priced the same way and kept only
  when they are cheaper than that keep-alive;
* with a thin history the keep-alive is ``min(default, C)``: keeping warm for what a start costs,
  then stopping, never pays more than twice the best choice in hindsight (ski rental).

For memoryless (Poisson) traffic this keeps a replica warm only for deployments whose mean gap is
below ``C``, and stops the others at once; the "histogram" tail window would keep them warm for
~4.6 mean gaps after every request, which is what a cheap start makes wasteful.

The module is pure: no I/O, clock or randomness. Callers pass gaps in seconds and read back
windows; the same history therefore gives the same windows in the control plane and in the trace
simulator. Memory is a fixed number of bins plus a bounded ring of recent long gaps, whatever the
traffic, so one history per deployment is cheap to keep and to persist (see ``to_dict``).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any, Final, Literal

from ember.control.policies import costs

Mode = Literal["default", "histogram", "uncertain", "predicted", "cost"]

# --- Constants of the policy. The first five are the paper's; the rest are Ember's choices. ---

HEAD_PERCENTILE: Final = 5
"""The pre-warm window is derived from the 5th percentile of gaps (the paper's "head"): the
earliest gaps are rare enough to accept a cold start for them, in exchange for unloading."""

TAIL_PERCENTILE: Final = 99
"""The warm window must last until the 99th percentile (the paper's "tail"), so only the 1%
longest in-range gaps find the replica gone."""

HEAD_MARGIN: Final = 0.9
"""Reload 10% earlier than the head percentile, as the paper does, to absorb jitter."""

TAIL_MARGIN: Final = 1.1
"""Stay warm 10% past the tail percentile, as the paper does, to absorb jitter."""

CV_REPRESENTATIVE: Final = 2.0
"""A histogram whose bin counts have a coefficient of variation of at least 2 is concentrated in
few bins (with equal counts in k of B bins, CV = sqrt(B/k - 1), so CV >= 2 means fewer than a
fifth of the bins hold gaps): its percentiles are trustworthy. The paper's threshold."""

OUT_OF_RANGE_SHARE: Final = 0.5
"""When more than half of the gaps exceed the histogram's range, the histogram says little; the
paper then switches to time-series prediction of the next gap."""

PREDICTED_PREWARM: Final = 0.85
PREDICTED_KEEPALIVE: Final = 0.3
"""In "predicted" mode be warm from 0.85x to 1.15x the forecast gap: the paper's 15% margin on
either side, wide enough for the noise of hour-scale periodic jobs."""

PREDICTION_SMOOTHING: Final = 0.3
"""Weight of the newest gap in the forecast (an exponentially weighted mean of log-gaps, i.e.
simple exponential smoothing, which is the optimal forecast of an ARIMA(0,1,1) process: the
lightest member of the ARIMA family the paper uses). 0.3 gives an effective memory of about
(2 - 0.3) / 0.3 ~ 6 gaps: one noisy gap moves the forecast by at most 30% of its log-error, yet
a real change of period is followed within a handful of gaps. Log space because long gaps vary
multiplicatively (6 h +- 10%), and a geometric mean is not dragged up by one huge outlier."""


@dataclass(frozen=True)
class KeepAliveWindows:
    """When a replica of one deployment should be warm, relative to the moment it went idle.

    With ``prewarm == 0`` the replica stays loaded from going idle for ``keepalive`` seconds.
    With ``prewarm > 0`` it is unloaded as soon as it goes idle and should be ready again at
    ``prewarm`` seconds, then kept for ``keepalive`` seconds more. Saving GPU time between the
    work and the next expected request is the point of the pre-warm window.
    """

    prewarm: float
    """Seconds after going idle at which a replica should be ready again (0: do not unload)."""
    keepalive: float
    """Seconds a replica stays warm, from ``prewarm`` (or from going idle when prewarm == 0)."""
    mode: str
    """How the windows were chosen: "default", "histogram", "uncertain", "predicted", or "cost"
    (the cost-aware keep-alive, when the caller says what a start costs)."""
    samples: int
    """How many idle gaps the decision rests on (for logs and dashboards)."""

    @property
    def warm_until(self) -> float:
        """Seconds after going idle at which the warm window ends (the replica may unload)."""
        return self.prewarm + self.keepalive

    def warm_at(self, idle_for: float) -> bool:
        """Whether a replica should be warm ``idle_for`` seconds after the deployment went idle.

        A request arriving when this is False meets a cold start. Both window ends are
        inclusive. A negative ``idle_for`` means the deployment has not gone idle yet: it is
        busy, so its replica is warm.
        """
        if idle_for < 0:
            return True
        return self.prewarm <= idle_for <= self.prewarm + self.keepalive


class IdleHistory:
    """Idle gaps of one deployment in a histogram (default 1-minute bins over 4 hours) plus the
    recent out-of-range gaps for prediction. Bounded memory whatever the traffic.

    For in-range gaps each bin keeps a count (the percentiles need nothing more) and the sum of
    its gaps (so the idle time a keep-alive ending on a bin edge would cost is exact); out-of-range
    gaps are counted, and the last ``recent`` of them are kept verbatim for the forecast.
    """

    __slots__ = ("_bin", "_counts", "_in_range", "_min_samples", "_out_of_range", "_range",
                 "_recent", "_sum_squares", "_sums")  # fmt: skip

    def __init__(
        self,
        bin_seconds: float = 60.0,
        range_seconds: float = 4 * 3600,
        min_samples: int = 10,
        recent: int = 32,
    ) -> None:
        """The defaults are the paper's: 1-minute bins over 4 hours (240 bins); ten gaps before
        trusting the histogram; 32 recent long gaps, far more than the forecast's effective
        memory (~6 gaps) so that dropping the oldest one never changes it measurably."""
        if not (math.isfinite(bin_seconds) and bin_seconds > 0):
            raise ValueError(f"bin_seconds must be positive, got {bin_seconds!r}")
        if not (math.isfinite(range_seconds) and range_seconds >= bin_seconds):
            raise ValueError(f"range_seconds must be at least one bin, got {range_seconds!r}")
        if min_samples < 1:
            raise ValueError(f"min_samples must be at least 1, got {min_samples!r}")
        if recent < 1:
            raise ValueError(f"recent must be at least 1, got {recent!r}")
        self._bin = float(bin_seconds)
        self._range = float(range_seconds)
        self._min_samples = int(min_samples)
        # The last bin may be partial when the range is not a whole number of bins.
        self._counts = [0] * math.ceil(self._range / self._bin)
        self._sums = [0.0] * len(self._counts)  # seconds of the gaps in each bin
        self._in_range = 0
        # Sum of squared bin counts, maintained on every record so the CV costs O(1).
        self._sum_squares = 0
        self._out_of_range = 0
        self._recent: deque[float] = deque(maxlen=int(recent))

    @property
    def samples(self) -> int:
        """How many gaps have been recorded."""
        return self._in_range + self._out_of_range

    @property
    def bins(self) -> int:
        """Number of histogram bins (fixed at construction)."""
        return len(self._counts)

    def record(self, gap_seconds: float) -> None:
        """Add one idle gap: seconds from the deployment going idle to its next request.

        Negative or non-finite gaps are caller bugs (e.g. mixing clocks) and raise rather than
        silently skewing the history that every later decision rests on.
        """
        if not (math.isfinite(gap_seconds) and gap_seconds >= 0):
            raise ValueError(f"idle gap must be a finite number of seconds >= 0: {gap_seconds!r}")
        if gap_seconds >= self._range:
            self._out_of_range += 1
            self._recent.append(float(gap_seconds))
            return
        index = int(gap_seconds // self._bin)
        count = self._counts[index]
        self._counts[index] = count + 1
        self._sums[index] += gap_seconds
        self._sum_squares += 2 * count + 1  # (c + 1)^2 - c^2
        self._in_range += 1

    def windows(
        self,
        default_keepalive: float,
        start_seconds: float | None = None,
        delay_weight: float = costs.DELAY_WEIGHT,
    ) -> KeepAliveWindows:
        """The windows to apply after the deployment next goes idle.

        ``default_keepalive`` is the operator's setting, used while history is thin and as the
        floor of the "uncertain" keep-alive, so learning never keeps replicas for less time than
        configured unless the histogram is confident.

        ``start_seconds`` is what starting a replica from zero takes now (measured by the caller;
        from a warm host about a second). When given, the windows are cost-aware (see the module
        docstring): the keep-alive that minimises idle GPU time plus the price of the starts it
        causes (``delay_weight`` GPU-seconds per second a request waits), or the learned
        pre-warm windows when those are cheaper still; ``default_keepalive`` then only caps the
        keep-alive while history is thin. ``None`` keeps the start-agnostic windows above.
        """
        if not (math.isfinite(default_keepalive) and default_keepalive >= 0):
            raise ValueError(f"default_keepalive must be >= 0 seconds: {default_keepalive!r}")
        if start_seconds is None:
            return self._learned(float(default_keepalive))
        cost = costs.start_cost(start_seconds, delay_weight)  # validates both
        return self._cost_aware(float(default_keepalive), float(start_seconds), cost)

    def _learned(self, default_keepalive: float) -> KeepAliveWindows:
        """The hybrid histogram policy's windows, blind to what a start costs."""
        total = self.samples
        if total < self._min_samples:
            return KeepAliveWindows(0.0, default_keepalive, "default", total)
        if self._out_of_range > OUT_OF_RANGE_SHARE * total:
            return self._predicted(total)
        # Here at least half the gaps are in range, so the histogram is not empty.
        head_edge, tail_edge = self._percentile_edges()
        if self._representative():
            # Rounding down to a bin edge makes the reload come no later than the lower edge
            # of the head bin: 0.9 * (k + 1) bins floors to at most k bins. Below one bin,
            # unloading and reloading would save nothing worth a risked cold start.
            prewarm = math.floor(head_edge * HEAD_MARGIN / self._bin) * self._bin
            if prewarm < self._bin:
                prewarm = 0.0
            end = tail_edge * TAIL_MARGIN
            return KeepAliveWindows(prewarm, end - prewarm, "histogram", total)
        # Deviation from the paper, which keeps an uncertain application warm for the whole
        # range (4 h): on GPUs that is the most expensive choice. We stay warm only until the
        # tail percentile, never less than the operator's default and never beyond the range.
        keepalive = max(default_keepalive, min(tail_edge, self._range))
        return KeepAliveWindows(0.0, keepalive, "uncertain", total)

    def _cost_aware(
        self, default_keepalive: float, start_seconds: float, start_cost: float
    ) -> KeepAliveWindows:
        """The cheapest windows when a start from zero takes ``start_seconds`` and costs
        ``start_cost`` GPU-seconds if a request waits for it.

        Costs are GPU-seconds per idle gap: warm idle time, plus ``start_cost`` for every start
        a request waits for, plus ``start_seconds`` for a pre-warm start nobody waits for.
        """
        total = self.samples
        if total < self._min_samples:
            # Ski rental: stay warm for what a start costs, then stop. Whatever the next gap,
            # this pays at most twice what the best choice in hindsight would have.
            return KeepAliveWindows(0.0, min(default_keepalive, start_cost), "default", total)
        keepalive, cost = self._cheapest_keepalive(start_cost)
        learned = self._learned(default_keepalive)
        if learned.prewarm > 0:
            # Periodic traffic: unloading and pre-warming may beat any keep-alive.
            lo, hi = learned.prewarm, learned.warm_until
            idle_lo, longer_lo = self._longer_than(lo)
            below_lo = total - longer_lo
            idle_hi, longer_hi = self._longer_than(hi)
            prewarm_cost = (
                below_lo * start_cost  # arrived before the pre-warm: waited for a start
                + longer_lo * start_seconds  # the pre-warm start itself (no one waits)
                + (idle_hi - idle_lo)  # warm and idle inside the window
                + longer_hi * start_cost  # the window closed before the request came
            ) / total
            if prewarm_cost < cost:
                return learned
        return KeepAliveWindows(0.0, keepalive, "cost", total)

    def keepalive_cost(self, keepalive: float, start_cost: float) -> float:
        """Expected GPU-seconds per idle gap of keeping a replica warm for ``keepalive`` seconds
        after going idle, when each start a request then waits for costs ``start_cost``
        GPU-seconds. 0 with no history."""
        if not self.samples:
            return 0.0
        idle, longer = self._longer_than(keepalive)
        return (idle + start_cost * longer) / self.samples

    def _cheapest_keepalive(self, start_cost: float) -> tuple[float, float]:
        """(keep-alive, expected cost per gap) minimising ``keepalive_cost``.

        Between two bin edges the cost grows linearly with the keep-alive (every longer gap pays
        the extra idle time), so the minimum is at 0 or at the upper edge of a non-empty bin,
        where it is exact: the gaps below sum to their bins' recorded sums, the others pay the
        keep-alive and a start. Ties go to the shorter keep-alive (less GPU time for the same
        expected cost). One pass over the bins.
        """
        total = self.samples
        best_keepalive, best = 0.0, start_cost * total  # stop at once: every gap meets a start
        below = 0.0  # seconds of the gaps in the bins covered so far
        longer = total
        for index, count in enumerate(self._counts):
            if not count:
                continue
            below += self._sums[index]
            longer -= count
            edge = min((index + 1) * self._bin, self._range)
            cost = below + (edge + start_cost) * longer
            if cost < best:
                best_keepalive, best = edge, cost
        return best_keepalive, best / total

    def _longer_than(self, seconds: float) -> tuple[float, float]:
        """(sum over gaps of min(gap, seconds), number of gaps longer than ``seconds``).

        Exact at bin edges; inside a bin its gaps are taken as spread evenly over it. Gaps beyond
        the range are taken as distributed like the recent ones kept for the forecast.
        """
        idle = 0.0
        longer = 0.0
        width = self._bin
        for index, count in enumerate(self._counts):
            if not count:
                continue
            lo = index * width
            hi = min(lo + width, self._range)
            if hi <= seconds:
                idle += self._sums[index]
            elif lo >= seconds:
                idle += count * seconds
                longer += count
            else:
                share = (seconds - lo) / (hi - lo)
                idle += count * share * (lo + seconds) / 2 + count * (1 - share) * seconds
                longer += count * (1 - share)
        if self._out_of_range:
            recent = self._recent or deque([self._range])
            n = len(recent)
            idle += self._out_of_range * sum(min(gap, seconds) for gap in recent) / n
            longer += self._out_of_range * sum(gap > seconds for gap in recent) / n
        return idle, longer

    def _representative(self) -> bool:
        """CV of the bin counts >= 2, compared exactly in integers.

        With B bins, n gaps and S the sum of squared counts: mean = n/B, variance = S/B - mean^2,
        so CV^2 = (B*S - n^2) / n^2 and CV >= 2 <=> B*S >= 5 n^2 (for CV_REPRESENTATIVE = 2).
        Integer arithmetic keeps the decision bit-identical across machines and replays.
        """
        n = self._in_range
        threshold = 1 + CV_REPRESENTATIVE**2  # exactly 5 for the paper's 2
        return len(self._counts) * self._sum_squares >= threshold * n * n

    def _percentile_edges(self) -> tuple[float, float]:
        """Upper edges of the bins holding the head and tail percentiles of in-range gaps.

        Nearest-rank percentiles (the smallest bin whose cumulative count reaches
        ceil(p/100 * n)), in integer arithmetic. Out-of-range gaps are excluded: they are a
        minority here, and one day-long outlier must not drag the tail to the end of the range.
        The upper edge is the lower edge plus one bin, i.e. the paper's "percentile + 1 bin":
        every gap in the tail bin is covered.
        """
        n = self._in_range
        head_rank = -(-HEAD_PERCENTILE * n // 100)
        tail_rank = -(-TAIL_PERCENTILE * n // 100)
        head = tail = len(self._counts) - 1
        cumulative = 0
        found_head = False
        for index, count in enumerate(self._counts):
            cumulative += count
            if not found_head and cumulative >= head_rank:
                head, found_head = index, True
            if cumulative >= tail_rank:
                tail = index
                break
        return (
            min((head + 1) * self._bin, self._range),
            min((tail + 1) * self._bin, self._range),
        )

    def _predicted(self, total: int) -> KeepAliveWindows:
        """Windows around a forecast of the next gap, for deployments idle beyond the range."""
        forecast = self._forecast()
        prewarm = PREDICTED_PREWARM * forecast
        keepalive = max(PREDICTED_KEEPALIVE * forecast, self._bin)
        return KeepAliveWindows(prewarm, keepalive, "predicted", total)

    def _forecast(self) -> float:
        """Exponentially weighted geometric mean of the recent out-of-range gaps, newest first.

        Weights (1 - a)^i for the i-th newest gap, normalized over the ring, so there is no
        start-up bias from an initial value. Every gap is >= the range, so is the forecast.
        """
        if not self._recent:  # only reachable through a hand-made from_dict payload
            return self._range
        decay = 1.0 - PREDICTION_SMOOTHING
        weight = 1.0
        weighted = 0.0
        weights = 0.0
        for gap in reversed(self._recent):
            weighted += weight * math.log(gap)
            weights += weight
            weight *= decay
        return math.exp(weighted / weights)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe state for the control plane to persist; ``from_dict`` restores it."""
        return {
            "version": 1,
            "bin_seconds": self._bin,
            "range_seconds": self._range,
            "min_samples": self._min_samples,
            "recent_max": self._recent.maxlen,
            "counts": list(self._counts),
            "sums": list(self._sums),
            "out_of_range": self._out_of_range,
            "recent": list(self._recent),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IdleHistory:
        """Rebuild a history saved by ``to_dict``; rejects payloads that do not fit its shape."""
        if data.get("version") != 1:
            raise ValueError(f"unsupported IdleHistory version: {data.get('version')!r}")
        history = cls(
            bin_seconds=data["bin_seconds"],
            range_seconds=data["range_seconds"],
            min_samples=data["min_samples"],
            recent=data["recent_max"],
        )
        counts = [int(c) for c in data["counts"]]
        if len(counts) != len(history._counts) or any(c < 0 for c in counts):
            raise ValueError("counts do not match the histogram's bins")
        out_of_range = int(data["out_of_range"])
        if out_of_range < 0:
            raise ValueError("out_of_range must be >= 0")
        recent = [float(g) for g in data["recent"]]
        if any(not (math.isfinite(g) and g >= history._range) for g in recent):
            raise ValueError("recent gaps must be finite and out of range")
        width = history._bin
        if "sums" in data:  # absent from payloads saved before the cost-aware keep-alive
            sums = [float(v) for v in data["sums"]]
            if len(sums) != len(counts) or any(not (math.isfinite(v) and v >= 0) for v in sums):
                raise ValueError("sums do not match the histogram's bins")
        else:  # each bin's gaps taken at its middle
            sums = [
                c * (i * width + min((i + 1) * width, history._range)) / 2
                for i, c in enumerate(counts)
            ]
        history._counts = counts
        history._sums = sums
        history._in_range = sum(counts)
        history._sum_squares = sum(c * c for c in counts)
        history._out_of_range = out_of_range
        history._recent.extend(recent)  # a longer list keeps its newest `recent_max` gaps
        return history
