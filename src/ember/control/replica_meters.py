"""The meters of one deployment's replicas while their processes live: each replica's
`ReplicaMeter` (policies/billing.py) and the hardware it was started on, and the usage events
the ledger turns into dollars — a final one when a process is gone, live ones for checkpoints.

Kept apart from the runner because a meter outlives the replica's place in the runner: a
draining or preempted replica is no longer routed to, yet it is billed until it exits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ember.control.policies.billing import ReplicaMeter
from ember.runtime.base import Replica

# The usage event's data: {replica, hardware, tier, meter, final}
OnUsage = Callable[[dict[str, Any]], None]


def usage_event(
    replica: Replica, meter: ReplicaMeter, hardware: str, final: bool
) -> dict[str, Any]:
    return {
        "replica": replica.id,
        "hardware": hardware,
        "tier": replica.tier.value,
        "meter": meter,
        "final": final,
    }


class ReplicaMeters:
    """By replica id, while its process lives (draining ones included)."""

    def __init__(self, clock: Callable[[], float], on_usage: OnUsage) -> None:
        self.clock = clock
        self.on_usage = on_usage
        self._meters: dict[str, tuple[Replica, ReplicaMeter, str]] = {}

    def __len__(self) -> int:
        return len(self._meters)

    def get(self, replica_id: str) -> ReplicaMeter | None:
        entry = self._meters.get(replica_id)
        return entry[1] if entry is not None else None

    def add(self, replica: Replica, meter: ReplicaMeter, hardware: str) -> None:
        """Meter `replica` from now (its process exists) until `account` sees it gone."""
        self._meters[replica.id] = (replica, meter, hardware)

    async def account(self, replica: Replica) -> None:
        """When the replica's process is gone, report its final account (a background task
        of the runner's, spawned with `add`)."""
        await replica.wait_stopped()
        _, meter, hardware = self._meters.pop(replica.id)
        meter.stopped(self.clock())
        self.on_usage(usage_event(replica, meter, hardware, True))

    def draining(self, replica_id: str) -> None:
        if (meter := self.get(replica_id)) is not None:
            meter.draining(self.clock())

    def live_usage(self) -> list[dict[str, Any]]:
        """Accounts of the replicas alive now, brought up to this moment (for checkpoints)."""
        now = self.clock()
        events = []
        for replica, meter, hardware in self._meters.values():
            meter.snapshot(now)
            events.append(usage_event(replica, meter, hardware, False))
        return events
