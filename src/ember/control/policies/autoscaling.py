"""How many replicas a deployment should have: metrics and a clock in, a number out.

The shape follows Knative's KPA (a stable window and a short panic window over observed
concurrency) with Ray Serve's per-direction delays, adapted to paid accelerators:

- At zero with requests waiting, start at once (Knative's activator: the first request is the
  signal). Nothing is refused while a replica starts; requests wait in the deployment's queue.
- Scale out fast: never fewer replicas than the work outstanding right now needs (one request
  waiting behind a busy replica is enough: a scale-out while the model is loaded takes a fraction
  of a second, the request would otherwise wait a whole service time), and the panic window
  (6 s) holds the count through bursts; a higher count applies after `scale_up_delay` (0 by
  default).
- Scale in when keeping a replica costs more than getting it back: a lower count must be wanted
  continuously for `scale_down_delay`, or, when the caller says how long a scale-out takes
  (`Limits.scale_out_seconds`), for as long as adding the replica back would cost in GPU-seconds
  (policies/costs.py), whichever is longer; while panicking the count never falls.
- Scale to zero once the deployment has been idle for its keep-alive (learned from its idle
  gaps and, when the runner measures it, from what a start from zero costs: policies/keepalive.py;
  or `idle_timeout`), and pre-warm one replica when the learned windows expect the next request.
- Floors: `min_instances` and keep-warm windows; ceiling: `max_instances`.

Pure: no I/O and no clock of its own, so it is tested with a fake clock and replayed on traces
by `control/replay` (bench/simulate.py, the cost advisor) exactly as the live controller runs
it.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from ember.control.policies.costs import DELAY_WEIGHT, start_cost

STABLE_WINDOW = 60.0  # seconds of concurrency averaged for steady decisions (Knative, Baseten)
PANIC_WINDOW = 6.0  # 10% of the stable window (Knative)
PANIC_THRESHOLD = 2.0  # panic when the short window wants twice the replicas there are


@dataclass(frozen=True)
class Observation:
    """What a deployment looked like at one moment."""

    time: float
    in_flight: int  # running on replicas
    queued: int  # waiting in the deployment's queue
    replicas: int  # ready + starting
    # When the last work ended, if none has come since: short predictions between two
    # observations leave no sample with demand, yet the deployment was busy then.
    idle_since: float | None = None


@dataclass(frozen=True)
class Decision:
    replicas: int
    reason: str
    panic: bool = False


@dataclass(frozen=True)
class Limits:
    """The bounds a decision must respect at this moment."""

    floor: int  # max(min_instances, keep-warm windows, pre-warm)
    ceiling: int  # max_instances
    target: float  # concurrency one replica should carry
    scale_up_delay: float
    scale_down_delay: float
    keepalive: float  # seconds idle before scaling to zero
    scale_out_seconds: float | None = None
    """Seconds a request waits for a scale-out: the controller noticing it (half a tick on
    average) plus a start while another replica is loaded, as measured. When given, an extra
    replica that is no longer needed is kept for as long as adding it back would cost,
    `start_cost(scale_out_seconds, delay_weight)` GPU-seconds, and never less than
    `scale_down_delay`. None: `scale_down_delay` alone (the behaviour before start costs)."""
    delay_weight: float = DELAY_WEIGHT
    """GPU-seconds worth one second of a request's waiting (policies/costs.py)."""


class Autoscaler:
    """The policy's memory for one deployment: recent observations and pending wishes."""

    def __init__(self) -> None:
        self._samples: deque[tuple[float, int]] = deque()
        self._up_since: float | None = None
        self._down_since: float | None = None
        self._panic_until: float | None = None
        self.last_busy: float | None = None
        self.current = 0

    def observe(self, observation: Observation) -> None:
        demand = observation.in_flight + observation.queued
        self._samples.append((observation.time, demand))
        while self._samples and self._samples[0][0] < observation.time - STABLE_WINDOW:
            self._samples.popleft()
        if demand > 0:
            self.last_busy = observation.time
        elif observation.idle_since is not None:
            self.last_busy = max(self.last_busy or observation.idle_since, observation.idle_since)
        self.current = observation.replicas

    def _average(self, now: float, window: float) -> float:
        values = [demand for time, demand in self._samples if time >= now - window]
        return sum(values) / len(values) if values else 0.0

    def idle_for(self, now: float) -> float:
        """Seconds since the deployment last had work (infinite if it never had any)."""
        return math.inf if self.last_busy is None else now - self.last_busy

    def decide(self, now: float, limits: Limits) -> Decision:
        current = self.current
        demand_now = self._samples[-1][1] if self._samples else 0
        stable = math.ceil(self._average(now, STABLE_WINDOW) / limits.target)
        panic_wish = math.ceil(self._average(now, PANIC_WINDOW) / limits.target)

        if current == 0 and demand_now > 0:
            # Scale from zero at once: the waiting request is the signal (activator).
            wanted = max(1, math.ceil(demand_now / limits.target))
            return self._bounded(wanted, limits, "requests waiting at zero replicas", now)

        if demand_now == 0 and self.idle_for(now) >= limits.keepalive:
            # No work at all for the whole keep-alive: whatever the windows still average,
            # nothing is left to serve, so stop paying for replicas.
            self._panic_until = None
            decision = self._bounded(0, limits, "idle past keep-alive", now)
            return self._apply_delays(decision, limits, now)

        if panic_wish >= PANIC_THRESHOLD * max(1, current):
            self._panic_until = now + STABLE_WINDOW
        panicking = self._panic_until is not None and now < self._panic_until
        wanted = max(stable, panic_wish, current) if panicking else stable
        # Queue-driven scale-out: never fewer replicas than the work there is right now needs.
        # With target = a replica's slots, one request waiting behind a busy replica is enough:
        # a scale-out from a loaded host costs a fraction of a second, while the request would
        # otherwise wait a whole service time (the averaged windows above need a sustained
        # burst before they react).
        wanted = max(wanted, math.ceil(demand_now / limits.target))

        if wanted == 0 and current > 0 and self.idle_for(now) < limits.keepalive:
            wanted = 1  # idle, but within the keep-alive: keep one warm
        decision = self._bounded(wanted, limits, "demand", now, panicking)
        return self._apply_delays(decision, limits, now)

    @staticmethod
    def scale_down_delay(limits: Limits) -> float:
        """How long a lower (non-zero) count must be wanted before extra replicas stop.

        Ski rental per extra replica: keeping it idle costs one GPU-second per second; stopping
        it means the next request that needs it waits `scale_out_seconds` for a new one, which
        costs `start_cost(scale_out_seconds)` GPU-seconds. Holding it for that long, then
        stopping, is the choice that is never far from the better of the two whatever comes next
        (at most twice its cost), without knowing when the next burst comes. Without a measured
        scale-out time: `scale_down_delay` as configured.
        """
        if limits.scale_out_seconds is None:
            return limits.scale_down_delay
        hold = start_cost(limits.scale_out_seconds, limits.delay_weight)
        return max(limits.scale_down_delay, hold)

    def _bounded(
        self, wanted: int, limits: Limits, reason: str, now: float, panic: bool = False
    ) -> Decision:
        if wanted < limits.floor:
            return Decision(limits.floor, "floor (min instances, keep-warm or pre-warm)", panic)
        if wanted > limits.ceiling:
            return Decision(limits.ceiling, f"{reason}, capped by max_instances", panic)
        return Decision(wanted, reason, panic)

    def _apply_delays(self, decision: Decision, limits: Limits, now: float) -> Decision:
        current = self.current
        if decision.replicas > current:
            self._down_since = None
            self._up_since = self._up_since if self._up_since is not None else now
            if now - self._up_since >= limits.scale_up_delay:
                return decision
            return Decision(current, "scale-up delay", decision.panic)
        if decision.replicas < current:
            self._up_since = None
            if decision.panic:
                return Decision(current, "no scale-down while panicking", True)
            self._down_since = self._down_since if self._down_since is not None else now
            to_zero = decision.replicas == 0
            delay = 0.0 if to_zero else self.scale_down_delay(limits)  # zero: keep-alive
            if now - self._down_since >= delay:
                reason = "idle past keep-alive" if to_zero else decision.reason
                return Decision(decision.replicas, reason, decision.panic)
            return Decision(current, "scale-down delay", decision.panic)
        self._up_since = self._down_since = None
        return decision
