"""Every prediction Ember knows of: live ones and recent ones in memory, all of them in the
database, and the listeners that hear each event.

A prediction's state changes are written by the group-commit writer: its end always, its
start only once a client has been told it exists (`acknowledge`). Listeners (metrics,
budgets, webhooks) hear every event as the runner reports it, on the event loop.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ember.control.errors import NotFound
from ember.control.predictions import PredictionState, utcnow
from ember.control.sealing import Sealer
from ember.store.repository import Store
from ember.store.writer import GroupCommitWriter

logger = logging.getLogger("ember.control")

Listener = Callable[[PredictionState, str], None]
RECENT_LIMIT = 2000


class PredictionBook:
    def __init__(
        self,
        store: Store,
        sealer: Sealer,
        outputs_dir: Path,
        wall: Callable[[], datetime.datetime] = utcnow,
    ) -> None:
        self.store = store
        self.sealer = sealer
        self.outputs_dir = outputs_dir
        self.wall = wall
        self.writer: GroupCommitWriter | None = None  # opened at start, after migrations
        self.listeners: list[Listener] = []
        self.live: dict[str, PredictionState] = {}
        self.recent: collections.OrderedDict[str, PredictionState] = collections.OrderedDict()

    def open(self) -> None:
        self.writer = GroupCommitWriter(self.store)

    async def close(self) -> None:
        if self.writer is not None:
            await asyncio.to_thread(self.writer.close)

    # -- what happens to predictions ---------------------------------------------------------

    def track(self, state: PredictionState) -> None:
        self.live[state.id] = state

    async def acknowledge(self, state: PredictionState) -> None:
        """Make the prediction durable before a client is told it exists.

        From then on its state changes are written too. A `Prefer: wait` prediction answered
        with its result is only ever written once, when it ends: until the answer goes out
        nobody has been promised anything, so a crash before then loses nothing acknowledged.
        """
        assert self.writer is not None
        state.acknowledged = True
        await self.writer.durable(state.id, state.row)

    def persist(self, state: PredictionState) -> None:
        assert self.writer is not None
        self.writer.mark(state.id, state.row)

    def on_event(self, state: PredictionState, event: str) -> None:
        """The runners' listener: write what must be durable, then tell every listener."""
        if event == "done" or (event == "started" and state.acknowledged):
            self.persist(state)
        if event == "done":
            self.live.pop(state.id, None)
            self.recent[state.id] = state
            while len(self.recent) > RECENT_LIMIT:
                self.recent.popitem(last=False)
        for listener in self.listeners:
            try:
                listener(state, event)
            except Exception:
                logger.exception("prediction listener failed")

    # -- reading them -----------------------------------------------------------------------

    async def get(self, prediction_id: str) -> PredictionState:
        state = self.live.get(prediction_id) or self.recent.get(prediction_id)
        if state is not None:
            return state
        row = await asyncio.to_thread(self.store.prediction, prediction_id)
        if row is None:
            raise NotFound(f"Prediction {prediction_id} not found")
        return self.from_row(row)

    def from_row(self, row: Any) -> PredictionState:
        """A stored prediction with its sealed `Secret` inputs opened (and still marked)."""
        state = PredictionState.from_row(row, self.outputs_dir / row.id, self.wall)
        clear, sealed = self.sealer.unseal_fields(row.input or {})
        if sealed:
            state.input, state.secret_fields, state.stored_input = clear, sealed, row.input
        if row.context:
            state.context = json.loads(self.sealer.unseal(row.context))
            state.stored_context = row.context
        return state

    async def page(
        self, limit: int, before: tuple[Any, str] | None, **filters: str | None
    ) -> list[PredictionState]:
        """Newest first; `filters`: status, model, deployment, owner (Store.predictions_page)."""
        rows = await asyncio.to_thread(self.store.predictions_page, limit, before, **filters)
        return [self.live.get(row.id) or self.from_row(row) for row in rows]

    def finished_since(self, since: datetime.datetime | None) -> list[PredictionState]:
        """Predictions that ended in memory since then (perhaps not yet flushed)."""
        return [
            state
            for state in list(self.recent.values())
            if state.terminal and (since is None or state.created_at >= since)
        ]

    @staticmethod
    async def wait(state: PredictionState, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the prediction to end; True if it did."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await state.done.wait()
        return state.terminal
