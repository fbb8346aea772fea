"""What the dashboard's charts are drawn from: each deployment's recent queue and replica
counts, sampled every few seconds, and its replica starts with their phases.

Both live in memory, in bounded rings (a day of samples, the last starts): they describe the
running platform, and a restart begins them anew. What must survive a restart — predictions
and replica accounts — is in the database already, and the time series read it from there.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ember.tasks import cancel_and_wait

SAMPLE_SECONDS = 2.0
KEEP_SAMPLES = 43_200  # a day at one sample every 2 s: about 3 MB per deployment at most
KEEP_STARTS = 500


@dataclass(frozen=True)
class Sample:
    """One deployment's counts at one moment (`at`: UNIX seconds)."""

    at: float
    starting: int
    ready: int
    queued: int
    running: int


@dataclass(frozen=True)
class StartRecord:
    """One replica start: when it was asked for, its tier, whether it came up, and how long
    each phase took (fork or spawn, load, setup as the replica measured them; `ready`, the
    whole start; later `first_prediction`, the first prediction's own time)."""

    at: float
    replica: str
    tier: str
    ok: bool
    phases: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "replica": self.replica,
            "tier": self.tier,
            "ok": self.ok,
            "phases": self.phases,
            "seconds": self.phases.get("ready", 0.0),
        }


class Timeline:
    """Samples and starts per deployment key ("owner/name" or "version:<id>")."""

    def __init__(self) -> None:
        self.samples: dict[str, collections.deque[Sample]] = {}
        self.starts: dict[str, collections.deque[StartRecord]] = {}

    def sample(self, at: float, counts: Iterable[tuple[str, dict[str, Any]]]) -> None:
        """Record each deployment's `runner.counts()` at `at`."""
        for key, status in counts:
            ring = self.samples.setdefault(key, collections.deque(maxlen=KEEP_SAMPLES))
            replicas = status["replicas"]
            ring.append(
                Sample(
                    at, replicas["starting"], replicas["ready"], status["queued"], status["running"]
                )
            )

    def on_replica_event(self, key: str, at: float, kind: str, data: dict[str, Any]) -> None:
        """A runner's `start` and `first_prediction` news (see Metrics.on_replica_event)."""
        ring = self.starts.setdefault(key, collections.deque(maxlen=KEEP_STARTS))
        if kind == "start":
            began = at - data["phases"].get("ready", 0.0)
            record = StartRecord(
                began, data["replica"], data["tier"], data["ok"], dict(data["phases"])
            )
            ring.append(record)
        elif kind == "first_prediction":
            for record in reversed(ring):  # the newest start of that replica
                if record.replica == data["replica"]:
                    record.phases["first_prediction"] = data["seconds"]
                    break

    def samples_between(self, key: str, start: float, end: float) -> list[Sample]:
        return [s for s in self.samples.get(key, ()) if start <= s.at < end]

    def starts_between(self, key: str, start: float, end: float) -> list[StartRecord]:
        return [s for s in self.starts.get(key, ()) if start <= s.at < end]

    def forget(self, key: str) -> None:
        self.samples.pop(key, None)
        self.starts.pop(key, None)


class Sampler:
    """Samples every deployment into a Timeline every `interval` seconds."""

    def __init__(
        self,
        timeline: Timeline,
        counts: Callable[[], Iterable[tuple[str, dict[str, Any]]]],
        wall: Callable[[], float],
        interval: float = SAMPLE_SECONDS,
    ) -> None:
        self.timeline = timeline
        self.counts = counts
        self.wall = wall
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            self.timeline.sample(self.wall(), self.counts())
            await asyncio.sleep(self.interval)

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
