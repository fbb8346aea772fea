"""When a deployment whose replicas fail to start may try again. Pure: failures and clock
readings in, a wait out, so the schedule is tested without processes.

A broken model must not be restarted in a tight loop (each start may build an environment or
load gigabytes), yet a flaky first start (a download, a busy disk) should be retried at once:
1 s, 2 s, 4 s ... after each failure in a row, at most a minute; one good start resets it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MAX_BACKOFF_SECONDS = 60.0


def restart_backoff(failed_starts: int) -> float:
    """Seconds to wait before the next start after `failed_starts` failures in a row. (The
    exponent stops growing once past the cap: a float power overflows beyond 2**1023.)"""
    return min(MAX_BACKOFF_SECONDS, 2.0 ** min(failed_starts - 1, 16))


@dataclass
class RestartBackoff:
    """The failures in a row of one deployment's starts, and until when the next must wait."""

    failed_starts: int = 0
    until: float = 0.0

    def failed(self, now: float) -> None:
        self.failed_starts += 1
        self.until = now + restart_backoff(self.failed_starts)

    def succeeded(self) -> None:
        self.failed_starts = 0

    def wait(self, now: float) -> float:
        """Seconds before a start may begin (0 when it may begin now)."""
        return max(0.0, self.until - now)

    def report(self, now: float) -> dict[str, Any] | None:
        """While starts keep failing: how many in a row, and when the next one may begin."""
        if not self.failed_starts:
            return None
        wait = self.wait(now)
        return {
            "failed_starts": self.failed_starts,
            "next_start_in": round(wait, 1),
            "detail": f"{self.failed_starts} failed start(s) in a row; next start in {wait:.0f} s",
        }
