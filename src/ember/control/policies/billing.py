"""What a replica's life costs, second by second, and who pays for it. Pure: events and clock
readings in, seconds and dollars out, so it is tested and replayed without processes.

A replica is billed from the moment it is asked for until its process is gone, at its
hardware's per-second rate. Each second is exactly one of:

- **starting**: asked for, not yet ready (spawn or fork, imports, setup). Its cost is the cold
  start, charged to the predictions that waited for it (below); what is not charged to one is
  start overhead of the deployment.
- **busy**: at least one prediction running. The second's cost is split evenly between the
  predictions running then, so concurrent predictions share the replica.
- **idle**: ready with nothing running: the price of being warm, charged to the deployment.
- **draining**: told to stop and finishing nothing (time spent finishing work is busy).

So the parts always sum to wall time x rate, whatever happens; that is the reconciliation the
ledger promises. Who waited for a start: the predictions accepted before the replica was ready
and then run on it. When it becomes ready, the start's cost is split into as many shares as
there were such predictions per replica then starting (the waiting ones are spread over all
the replicas that were starting), and the first ones it runs take a share each.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

STARTING, BUSY, IDLE, DRAINING = "starting", "busy", "idle", "draining"


@dataclass
class Charge:
    """What one prediction cost on its replica."""

    busy_seconds: float = 0.0  # its share of the replica's busy seconds
    predict_cost: float = 0.0
    cold_start_cost: float = 0.0

    @property
    def total(self) -> float:
        return self.predict_cost + self.cold_start_cost


@dataclass
class Usage:
    """A replica's life in seconds and dollars, by state."""

    rate: float
    seconds: dict[str, float] = field(
        default_factory=lambda: {STARTING: 0.0, BUSY: 0.0, IDLE: 0.0, DRAINING: 0.0}
    )
    attributed_start_cost: float = 0.0  # the part of the start charged to predictions

    @property
    def wall_seconds(self) -> float:
        return sum(self.seconds.values())

    def cost(self, state: str) -> float:
        return self.seconds[state] * self.rate

    @property
    def total_cost(self) -> float:
        return self.wall_seconds * self.rate


class ReplicaMeter:
    """Follows one replica: call the methods as things happen, with the clock's reading."""

    def __init__(self, rate: float, requested_at: float) -> None:
        if not (math.isfinite(rate) and rate >= 0):
            raise ValueError(f"a rate is a finite number of dollars per second >= 0: {rate!r}")
        self.usage = Usage(rate)
        self.requested_at = requested_at
        self.ready_at: float | None = None
        self.stopped_at: float | None = None
        self._last = requested_at
        self._state = STARTING
        self._stopping = False
        self._running: dict[str, Charge] = {}
        self._shares_left = 0
        self._share = 0.0

    @property
    def state(self) -> str:
        return self._state

    def _advance(self, now: float) -> None:
        elapsed = max(0.0, now - self._last)
        self._last = max(self._last, now)
        if not elapsed:
            return
        if self._running:
            self.usage.seconds[BUSY] += elapsed
            each = elapsed / len(self._running)
            for charge in self._running.values():
                charge.busy_seconds += each
                charge.predict_cost += each * self.usage.rate
        else:
            self.usage.seconds[self._state] += elapsed

    def ready(self, now: float, waiting: int, starting_replicas: int = 1) -> None:
        """The replica is ready; `waiting` predictions accepted before now are queued, and
        `starting_replicas` (this one included) were starting to serve them."""
        self._advance(now)
        self.ready_at = now
        self._state = DRAINING if self._stopping else IDLE
        self._shares_left = max(1, math.ceil(waiting / max(1, starting_replicas)))
        self._share = self.usage.seconds[STARTING] * self.usage.rate / self._shares_left

    def started(self, prediction_id: str, now: float, accepted_at: float) -> None:
        """A prediction began on this replica (it had been accepted at `accepted_at`)."""
        self._advance(now)
        charge = Charge()
        waited = self.ready_at is not None and accepted_at <= self.ready_at
        if waited and self._shares_left > 0:
            self._shares_left -= 1
            charge.cold_start_cost = self._share
            self.usage.attributed_start_cost += self._share
        self._running[prediction_id] = charge

    def finished(self, prediction_id: str, now: float) -> Charge:
        """A prediction ended (or was never started here: then it costs nothing)."""
        self._advance(now)
        return self._running.pop(prediction_id, None) or Charge()

    def draining(self, now: float) -> None:
        self._advance(now)
        self._stopping = True
        if self._state != STARTING:
            self._state = DRAINING
        # Told to stop while starting: the rest of its start is still a start, then it drains.

    def stopped(self, now: float) -> Usage:
        """The process is gone: the final account (predictions still running are charged
        their share so far)."""
        self._advance(now)
        self.stopped_at = now
        self._running.clear()
        return self.usage

    def snapshot(self, now: float) -> Usage:
        """The account so far, for reports on replicas still alive."""
        self._advance(now)
        return self.usage
