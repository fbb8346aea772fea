"""After a crash: finish what it interrupted, in the order predictions were accepted.

Waiting predictions are queued again. Running ones that had produced no output run again
(as a replica's crash would, up to the deployment's `prediction_retries`); the rest fail,
saying why. A prediction whose deployment or version was removed meanwhile fails too.
"""

from __future__ import annotations

import asyncio

from ember.control.accounts import Accounts
from ember.control.deployments import Deployments
from ember.control.errors import NotFound
from ember.control.prediction_book import PredictionBook

RESTART_REASON = (
    "Ember restarted while this prediction was running; its replica was lost and the "
    "prediction cannot be resumed: it had produced output, or used its prediction_retries. "
    "Run it again."
)


async def recover(book: PredictionBook, deployments: Deployments, accounts: Accounts) -> None:
    for row in await asyncio.to_thread(book.store.unfinished_predictions):
        state = book.from_row(row)
        if state.webhook:  # what signs the calls it still owes
            await accounts.load_webhook_secret(state.owner)
        try:
            target = deployments.targets.get(
                state.deployment or ""
            ) or await deployments.for_version(state.version_id)
        except NotFound as exc:
            state.finish("failed", error=f"{exc}: it was removed while Ember was down")
            book.persist(state)
            continue
        if row.status == "processing":
            allowed = target.runner.settings.prediction_retries
            if state.output not in (None, []) or state.retries >= allowed:
                state.finish("failed", error=RESTART_REASON)
                book.persist(state)
                book.on_event(state, "done")
                continue
            state.run_again("Ember restarted while this prediction was running", allowed)
            book.persist(state)
        book.track(state)
        target.runner.submit(state, force=True)
