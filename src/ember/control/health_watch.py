"""Asks a deployment's ready replicas whether their model is well, and replaces the unwell.

The I/O half of `policies/health.py`: a round of checks runs in the background when due (one
at a time, never blocking a scaling tick). The on-demand check behind Cog's
`GET /health-check` does not count toward the streaks: a caller polling it must not be able
to get replicas replaced. The runner is told which replica to replace; it knows how to drain
one and start another.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

from ember.control.policies.health import CHECK_INTERVAL_SECONDS, HealthStreaks
from ember.runtime.base import Replica, ReplicaState
from ember.tasks import cancel_and_wait

logger = logging.getLogger("ember.control")

Replace = Callable[[Replica, str], None]
INTERVAL_ENV = "EMBER_HEALTHCHECK_SECONDS"


def interval_from_env() -> float:
    """EMBER_HEALTHCHECK_SECONDS where set (0 turns the periodic checks off), else 30."""
    return float(os.environ.get(INTERVAL_ENV) or CHECK_INTERVAL_SECONDS)


class HealthWatch:
    def __init__(self, deployment: str, replace: Replace, streaks: HealthStreaks) -> None:
        self.deployment = deployment
        self.replace = replace
        self.streaks = streaks
        self._round: asyncio.Task[None] | None = None

    def tick(self, now: float, replicas: list[Replica]) -> None:
        """Start a round of checks on the ready replicas when one is due."""
        self.streaks.forget({r.id for r in replicas})
        if (self._round and not self._round.done()) or not self.streaks.round_due(now):
            return
        if ready := [r for r in replicas if r.state == ReplicaState.READY and r.has_healthcheck]:
            self._round = asyncio.create_task(self._check_all(ready))

    def started(self, replica: Replica) -> None:
        """Count the check its worker ran once setup ended, as the first of its streak."""
        if replica.startup_health is not None:
            self.streaks.record(replica.id, replica.startup_health)

    async def _check_all(self, replicas: list[Replica]) -> None:
        await asyncio.gather(*(self.check(replica) for replica in replicas))

    async def check(self, replica: Replica) -> str | None:
        """One replica's answer (None: healthy), counted toward its streak."""
        error = await replica.healthcheck()
        if replica.state != ReplicaState.READY:
            return error  # it stopped meanwhile: nothing to replace
        if self.streaks.record(replica.id, error):
            count = self.streaks.failures_to_replace
            reason = f"its model failed {count} healthchecks in a row; the last: {error}"
            logger.warning("%s: replacing replica %s: %s", self.deployment, replica.id, reason)
            self.replace(replica, reason)
        return error

    def report(self) -> dict[str, dict[str, object]]:
        return self.streaks.report()

    async def close(self) -> None:
        await cancel_and_wait(self._round)
