"""Group commit for predictions: many state changes, one transaction.

Callers mark a prediction dirty and may wait for it to be durable. One thread drains the
dirty set, writes the *current* state of each prediction in a single upsert transaction,
then wakes every waiter whose mark came before that transaction began. Under load, a burst
of 16 new predictions costs one commit; a prediction that starts and finishes between two
flushes costs one row write.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from ember.store.repository import Store

logger = logging.getLogger("ember.store")

Row = dict[str, Any]
RETRY_SECONDS = 0.5


class GroupCommitWriter:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._dirty: dict[str, Callable[[], Row]] = {}
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._wake = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="ember-group-commit", daemon=True)
        self._thread.start()

    def mark(self, prediction_id: str, snapshot: Callable[[], Row]) -> None:
        """Schedule a write of this prediction's state as it is when the flush runs."""
        with self._wake:
            self._dirty[prediction_id] = snapshot
            self._wake.notify()

    async def durable(self, prediction_id: str, snapshot: Callable[[], Row]) -> None:
        """Mark, then wait until a transaction containing this state has committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._wake:
            self._dirty[prediction_id] = snapshot
            self._waiters.append((loop, future))
            self._wake.notify()
        await future

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._dirty and not self._closed:
                    self._wake.wait()
                if self._closed and not self._dirty:
                    return
                batch, self._dirty = self._dirty, {}
                waiters, self._waiters = self._waiters, []
            try:
                # Snapshots are taken here, on this thread: they read plain attributes.
                self.store.upsert_predictions(snapshot() for snapshot in batch.values())
            except Exception:
                # Keep the batch (newer marks win) and its waiters, and try again shortly:
                # a terminal state must not be dropped because the database hiccuped.
                logger.exception("writing %d predictions failed; retrying", len(batch))
                with self._wake:
                    self._dirty = {**batch, **self._dirty}
                    self._waiters = waiters + self._waiters
                time.sleep(RETRY_SECONDS)
                continue
            for loop, future in waiters:
                loop.call_soon_threadsafe(_settle, future, None)

    def close(self) -> None:
        """Flush what is pending, then stop the thread."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join(timeout=30)


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
