"""The cost ledger's recorder: turns the runners' replica accounts into `replica_usage` rows.

A replica's final account is written when its process is gone; live replicas are
checkpointed every `CHECKPOINT_SECONDS`, so a crash of Ember loses at most that much of their
time and reports include replicas still running. Durations come from the runners' clock (the
one the meters read); wall-clock timestamps are derived from it at write time.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from ember.control.policies.billing import BUSY, DRAINING, IDLE, STARTING, ReplicaMeter
from ember.control.predictions import utcnow
from ember.control.reports import ReplicaAccount
from ember.control.runner import DeploymentRunner
from ember.store.db import aware
from ember.store.repository import Store
from ember.tasks import cancel_and_wait

logger = logging.getLogger("ember.control")

CHECKPOINT_SECONDS = 30.0


class Ledger:
    def __init__(
        self,
        store: Store,
        runners: Callable[[], Iterable[DeploymentRunner]],
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime.datetime] = utcnow,
    ) -> None:
        self.store = store
        self.runners = runners
        self.clock = clock
        self.wall = wall
        self._pending: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None

    def row(self, deployment: str, event: dict[str, Any]) -> dict[str, Any]:
        meter: ReplicaMeter = event["meter"]
        usage = meter.usage
        now, wall = self.clock(), self.wall()

        def at(reading: float) -> datetime.datetime:
            return wall - datetime.timedelta(seconds=max(0.0, now - reading))

        return {
            "id": event["replica"],
            "deployment": deployment,
            "hardware": event["hardware"],
            "tier": event["tier"],
            "rate": usage.rate,
            "requested_at": at(meter.requested_at),
            "stopped_at": at(meter.stopped_at) if meter.stopped_at is not None else None,
            "starting_seconds": usage.seconds[STARTING],
            "busy_seconds": usage.seconds[BUSY],
            "idle_seconds": usage.seconds[IDLE],
            "draining_seconds": usage.seconds[DRAINING],
            "attributed_start_cost": usage.attributed_start_cost,
            "cost": usage.total_cost,
            "final": event["final"],
        }

    def on_replica_event(self, deployment: str, kind: str, data: dict[str, Any]) -> None:
        """A runner's listener: write a replica's final account as soon as it is known."""
        if kind == "usage" and data["final"]:
            task = asyncio.create_task(self._write([self.row(deployment, data)]))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _write(self, rows: list[dict[str, Any]]) -> None:
        try:
            await asyncio.to_thread(self.store.upsert_replica_usage, rows)
        except Exception:
            logger.exception("writing %d replica accounts failed", len(rows))

    def live_rows(self) -> list[dict[str, Any]]:
        return [
            self.row(runner.name, event)
            for runner in self.runners()
            for event in runner.meters.live_usage()
        ]

    async def accounts_since(
        self, since: datetime.datetime | None, deployment: str | None = None
    ) -> list[ReplicaAccount]:
        """Replica accounts since then (of one deployment, if given), live ones brought up
        to now: what reports and budgets are computed from."""
        stored = await asyncio.to_thread(self.store.replica_usage_since, since, deployment)
        accounts = {r.id: _account(r.__dict__) for r in stored}
        for row in self.live_rows():  # fresher than their last checkpoint
            if deployment is None or row["deployment"] == deployment:
                accounts[row["id"]] = _account(row)
        return list(accounts.values())

    async def checkpoint(self) -> None:
        await self._write(self.live_rows())

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(CHECKPOINT_SECONDS)
            await self.checkpoint()

    async def stop(self) -> None:
        """Stop checkpointing; wait for the final accounts already being written."""
        await cancel_and_wait(self._task)
        self._task = None
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)


def _account(row: dict[str, Any]) -> ReplicaAccount:
    return ReplicaAccount(
        id=row["id"],
        deployment=row["deployment"],
        hardware=row["hardware"],
        requested_at=aware(row["requested_at"]),
        starting_seconds=row["starting_seconds"],
        busy_seconds=row["busy_seconds"],
        idle_seconds=row["idle_seconds"],
        draining_seconds=row["draining_seconds"],
        rate=row["rate"],
        cost=row["cost"],
        stopped_at=aware(row["stopped_at"]) if row["stopped_at"] else None,
    )
