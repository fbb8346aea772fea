"""When a replica whose model says it is unwell is replaced. Pure: check results and clock
readings in, decisions out, so the rule is tested without processes.

A model's own healthcheck (Cog's `healthcheck()`, Truss's `is_healthy()`) is asked every
`interval` seconds on each ready replica. One failed check can be a blip (a slow disk, a
dependency restarting), so a replica is replaced only after `failures_to_replace` failures in
a row; one good answer resets its count. Replacing drains it: what it runs finishes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

CHECK_INTERVAL_SECONDS = 30.0
FAILURES_TO_REPLACE = 3


@dataclass
class HealthStreaks:
    """Failed healthchecks in a row per replica, and when the next round of checks is due."""

    interval: float = CHECK_INTERVAL_SECONDS
    failures_to_replace: int = FAILURES_TO_REPLACE
    last_round: float | None = None  # None: the clock starts at the first tick
    failures: dict[str, int] = field(default_factory=dict)
    last_error: dict[str, str] = field(default_factory=dict)

    def round_due(self, now: float) -> bool:
        """Whether a round of checks starts now (then the next is `interval` away). The
        first comes one interval after the first tick: a replica's worker has just run the
        check once set up, and that answer counts already."""
        if self.interval <= 0:
            return False
        if self.last_round is None:
            self.last_round = now
            return False
        if now - self.last_round < self.interval:
            return False
        self.last_round = now
        return True

    def record(self, replica_id: str, error: str | None) -> bool:
        """Note one check's answer; True when the replica should now be replaced."""
        if error is None:
            self.failures.pop(replica_id, None)
            self.last_error.pop(replica_id, None)
            return False
        self.failures[replica_id] = self.failures.get(replica_id, 0) + 1
        self.last_error[replica_id] = error
        return self.failures[replica_id] >= self.failures_to_replace

    def forget(self, alive: set[str]) -> None:
        """Drop what is kept of replicas that are gone."""
        for kept in (self.failures, self.last_error):
            for replica_id in [r for r in kept if r not in alive]:
                del kept[replica_id]

    def report(self) -> dict[str, dict[str, object]]:
        """Replicas failing their checks now: how many times in a row, and the last reason."""
        return {
            replica_id: {"failures": count, "error": self.last_error.get(replica_id)}
            for replica_id, count in self.failures.items()
        }
