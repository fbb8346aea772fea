"""Intake: the one way a prediction gets into Ember, whichever API it came through.

`Intake.submit` takes what a caller asked for and either refuses it, saying why, or
returns the accepted prediction. The checks run in this order, each before any work is
done for the next, so a refused request costs nothing and leaves nothing behind:

1. **validate**: the input against the version's schema (`InvalidRequest`, per field in
   Cog's shape); an OpenAI request's body was validated by its route and goes to the
   predictor's own handler as it is;
2. **egress**: a webhook, and every input URL, must name an address Ember may reach
   (`EgressDenied`, `InvalidRequest` per field), checked now rather than once a replica has
   started for it; the account's webhook secret is loaded (what will sign its calls);
3. **budgets**: of the caller's token and of the deployment (`BudgetExceeded`);
4. **accept**: the runner queues it (`QueueFull` past the deployment's `queue_limit`);
5. **durability**: written to the database before the caller is told it exists, unless the
   caller waits for the end (`Prefer: wait`: written once, when it ends, or when the wait
   runs out) or the answer is bound to the connection (OpenAI's: written when it ends).

Rate limits are not here: they count every request a token makes, whatever it asks, so
authentication counts them (`tokens.py`) before a route runs.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ember.control.access import Principal, sees
from ember.control.accounts import Accounts
from ember.control.budget_guard import BudgetGuard
from ember.control.catalogue import Catalogue
from ember.control.deployments import Deployments, Target
from ember.control.errors import EgressDenied, InvalidRequest
from ember.control.files import Files
from ember.control.prediction_book import PredictionBook
from ember.control.predictions import PredictionState, StreamEvent, new_prediction_id, utcnow
from ember.control.sealing import Sealer
from ember.egress import EgressPolicy, EgressRefused
from ember.runtime.base import PREDICT

CANCEL_SETTLE_SECONDS = 1.0
# A caller's own prediction id: fits the database column and is safe as a folder name.
CALLER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,39}")


@dataclass
class Submission:
    """What a caller asks to run, in the control plane's words (routes translate HTTP)."""

    input: dict[str, Any]
    method: str = PREDICT  # or the OpenAI route whose body `input` is
    webhook: str | None = None
    webhook_events_filter: list[str] | None = None
    stream: bool = False  # the caller will read it as server-sent events
    # `Prefer: wait`: seconds to wait for its end before answering (None: answer at once).
    wait: float | None = None
    # False when the answer is bound to the caller's connection (OpenAI's): nobody can ask
    # for it later, so it is written only when it ends.
    durable: bool = True
    # The caller's own id for it (Cog's container API lets the caller name a prediction, so
    # a retried request finds it). Checked here to be well formed (it names a folder of
    # output files); the route makes sure no prediction has it yet.
    id: str | None = None
    # Cog's per-request `context` for the predictor (`current_scope().context`).
    context: dict[str, str] | None = None


@dataclass
class Accepted:
    state: PredictionState
    finished: bool  # it ended within the submission's wait
    # Its events from before it could run (for callers that relay a stream), else None.
    events: asyncio.Queue[StreamEvent] | None = None


class Intake:
    def __init__(
        self,
        catalogue: Catalogue,
        deployments: Deployments,
        book: PredictionBook,
        accounts: Accounts,
        budgets: BudgetGuard,
        egress: EgressPolicy,
        sealer: Sealer,
        files: Files,
        wall: Callable[[], datetime.datetime] = utcnow,
    ) -> None:
        self.catalogue = catalogue
        self.deployments = deployments
        self.book = book
        self.accounts = accounts
        self.budgets = budgets
        self.egress = egress
        self.sealer = sealer
        self.files = files
        self.wall = wall

    async def submit(self, target: Target, submission: Submission, caller: Principal) -> Accepted:
        """Validate, check egress and budgets, accept and make durable, in that order (see
        the module's docstring); returns the accepted prediction or raises an EmberError."""
        state = self.describe(target, submission, caller)
        await self._check_file_links(state, caller)
        await self._check_egress(target, state)
        await self.budgets.check(caller.token_id, target.deployment)
        events = state.subscribe() if state.streams_output and not submission.durable else None
        target.runner.submit(state)
        self.book.track(state)
        finished = False
        if submission.wait is not None:
            finished = await self.book.wait(state, submission.wait)
        if submission.durable and not finished:
            await self.book.acknowledge(state)
        return Accepted(state, finished, events)

    def describe(
        self, target: Target, submission: Submission, caller: Principal
    ) -> PredictionState:
        """The prediction the submission asks for, its input checked against the version's
        schema (an OpenAI request's body goes to the predictor's own handler as it is)."""
        if submission.id is not None and not CALLER_ID.fullmatch(submission.id):
            raise InvalidRequest(
                "Invalid prediction id",
                [
                    {
                        "loc": ["body", "id"],
                        "msg": "a prediction id is 1 to 40 letters, digits, '-' or '_', "
                        "starting with a letter or digit",
                        "type": "value_error",
                    }
                ],
            )
        fields: dict[str, Any] = {}
        if submission.method == PREDICT:
            validator = self.catalogue.validator(target.version)
            details = validator.errors(submission.input)
            if details:
                raise InvalidRequest("Input validation failed", details)
            schema = target.version.openapi_schema["components"]["schemas"]["Output"]
            fields["streams_output"] = schema.get("x-cog-array-type") == "iterator"
            if validator.secret_fields:
                fields["secret_fields"] = validator.secret_fields
                fields["stored_input"] = self.sealer.seal_fields(
                    submission.input, validator.secret_fields
                )
        else:
            fields["streams_output"] = bool(submission.input.get("stream"))
        if submission.context:
            fields["context"] = dict(submission.context)
            fields["stored_context"] = self.sealer.seal(json.dumps(submission.context))
        return PredictionState(
            id=submission.id or new_prediction_id(),
            owner=caller.owner,
            model=target.model,
            version_id=target.version.id,
            input=submission.input,
            deployment=target.deployment,
            token_id=caller.token_id,
            method=submission.method,
            stream=submission.stream,
            webhook=submission.webhook,
            webhook_events_filter=submission.webhook_events_filter,
            created_at=self.wall(),
            wall=self.wall,
            **fields,
        )

    async def _check_egress(self, target: Target, state: PredictionState) -> None:
        """Refuse now a webhook or input URLs that name an address Ember may not reach,
        rather than fail once a replica has started. Links to Ember's own files are
        allowed (its public URL is in the policy)."""
        if state.webhook:
            try:
                await self.egress.check_url(state.webhook)
            except EgressRefused as exc:
                raise EgressDenied(f"webhook: {exc}") from None
            await self.accounts.load_webhook_secret(state.owner)  # what will sign its calls
        if state.method != PREDICT:
            return
        details = []
        for where, url in self.catalogue.validator(target.version).file_urls(state.input):
            try:
                await self.egress.check_url(url)
            except EgressRefused as exc:
                details.append({"loc": where, "msg": str(exc), "type": "egress"})
        if details:
            raise InvalidRequest("Input validation failed", details)

    async def _check_file_links(self, state: PredictionState, caller: Principal) -> None:
        """Refuse links to uploaded files the caller may not read: the runner signs every
        such link for the replica, so without this check a tenant could have another's
        upload fetched (and echoed back) by naming its URL."""
        if state.method != PREDICT:
            return
        details = []
        for where, file_id in self.files.linked_files(state.input):
            record = await asyncio.to_thread(self.files.store.file, file_id)
            if record is None or not sees(caller, record.owner):
                details.append(
                    {
                        "loc": ["body", "input", *where],
                        "msg": f"file {file_id} not found: upload it with POST /v1/files "
                        "using this token and pass the URL that answer gives",
                        "type": "value_error",
                    }
                )
        if details:
            raise InvalidRequest("Input validation failed", details)

    async def cancel(self, prediction_id: str) -> PredictionState:
        """Cancel a prediction; answers with its outcome once it settles (a round trip)."""
        state = await self.book.get(prediction_id)
        if state.terminal:
            return state
        self.deployments.stop_prediction(state)
        # A prediction waiting inside a replica, or one that stops promptly, is canceled a
        # round trip later: answer with that outcome rather than the state before it.
        await self.book.wait(state, CANCEL_SETTLE_SECONDS)
        return state
