"""A prediction while the platform holds it: its state, who is watching it, and its record.

The state lives in memory from acceptance to completion; `row()` is what the group-commit
writer persists, `subscribe()` feeds SSE streams, `done` wakes `Prefer: wait` requests.
"""

from __future__ import annotations

import asyncio
import datetime
import secrets
import string
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ember.control.sealing import redact, scrub
from ember.runtime.base import PREDICT
from ember.store.db import aware

TERMINAL = frozenset({"succeeded", "failed", "canceled"})
_ID_ALPHABET = string.digits + string.ascii_lowercase


_entropy = bytearray()


def new_prediction_id() -> str:
    """Replicate-style id: 26 lowercase letters and digits (about 134 random bits).

    Random bytes are read from the system 4 KiB at a time: one read per 240 ids instead of
    one per id keeps the system call off the prediction hot path.
    """
    if len(_entropy) < 17:
        _entropy.extend(secrets.token_bytes(4080))
    number = int.from_bytes(_entropy[:17])
    del _entropy[:17]
    digits = []
    for _ in range(26):
        number, digit = divmod(number, 36)
        digits.append(_ID_ALPHABET[digit])
    return "".join(digits)


def openai_summary(output: Any) -> Any:
    """An OpenAI response as the prediction history keeps it: the answers' text, finish
    reasons and usage, but not embedding vectors or logprobs (megabytes per request)."""
    if not isinstance(output, dict):
        return output
    summary = {k: output[k] for k in ("id", "object", "model", "usage") if k in output}
    choices = output.get("choices")
    if isinstance(choices, list):
        summary["choices"] = [
            {k: v for k, v in choice.items() if k != "logprobs"}
            for choice in choices
            if isinstance(choice, dict)
        ]
    data = output.get("data")
    if data is not None:
        summary["data"] = f"{len(data)} embeddings" if isinstance(data, list) else data
    return summary


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass
class StreamEvent:
    """One SSE-worthy happening: output (an item), logs (text), metric (one the predictor
    just recorded), or done (terminal)."""

    kind: str
    data: Any = None


@dataclass(eq=False)  # compared by identity: a queue's `in`/`remove` must not compare fields
class PredictionState:
    id: str
    owner: str
    model: str
    version_id: str
    input: dict[str, Any]
    deployment: str | None = None
    token_id: str | None = None  # the API token that created it (whose spend it is)
    status: str = "starting"
    output: Any = None
    logs: str = ""
    error: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    source: str = "api"
    method: str = PREDICT  # or an OpenAI route ("chat.completions", ...), never persisted
    # Why the replica refused the input, per field (an OpenAI request's 400), when it did.
    validation: list[dict[str, Any]] = field(default_factory=list)
    stream: bool = False
    streams_output: bool = False  # the version's output is an iterator
    webhook: str | None = None
    webhook_events_filter: list[str] | None = None
    created_at: datetime.datetime = field(default_factory=utcnow)
    # Where its timestamps come from: the platform's wall clock (a test's manual one), so
    # that what it is charged lands in the budget period of the clock that checks budgets.
    wall: Callable[[], datetime.datetime] = field(default=utcnow, repr=False)
    started_at: datetime.datetime | None = None
    completed_at: datetime.datetime | None = None
    files_dir: Path | None = None
    # Whether a client has been told the prediction exists (async 201, or a `Prefer: wait`
    # answer that ran out of time). Only then must its intermediate states be durable.
    acknowledged: bool = False
    # The deploying runner's clock when it was accepted (queue time, cold-start attribution);
    # it moves with the prediction when a new release's runner takes the queue over.
    accepted_clock: float | None = None
    # Runs begun again elsewhere after a replica was lost before producing output.
    retries: int = 0
    # The inputs the version declares `Secret`: stored sealed (`stored_input`), shown redacted
    # (`public_input`), and scrubbed from logs and errors; `input` keeps them for the replica.
    secret_fields: frozenset[str] = frozenset()
    stored_input: dict[str, Any] | None = field(default=None, repr=False)
    # What the caller gave the predictor beside its input (Cog's `context`, read through
    # `current_scope().context`): never shown; stored sealed (`stored_context`).
    context: dict[str, str] = field(default_factory=dict, repr=False)
    stored_context: str | None = field(default=None, repr=False)
    # Monotonic times for token latencies: when it was accepted, when its last item came.
    accepted_at: float = field(default_factory=time.monotonic, repr=False)
    last_output_at: float | None = field(default=None, repr=False)
    last_item: Any = field(default=None, repr=False)  # the latest streamed item
    done: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    _subscribers: list[asyncio.Queue[StreamEvent]] = field(default_factory=list, repr=False)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def public_input(self) -> dict[str, Any]:
        """The input as anyone may see it: `Secret` values redacted."""
        return redact(self.input, self.secret_fields) if self.secret_fields else self.input

    def scrubbed(self, text: str) -> str:
        """`text` without this prediction's `Secret` values (an optional one may be absent)."""
        if not self.secret_fields:
            return text
        values = [self.input.get(name) for name in self.secret_fields]
        return scrub(text, [v for v in values if isinstance(v, str)])

    def scrubbed_output(self, value: Any) -> Any:
        """An output (or streamed item) with every string in it scrubbed like the logs: a
        model that echoes its key in its answer must not show it to whoever reads the
        prediction (outputs are kept, listed and sent to webhooks)."""
        if not self.secret_fields:
            return value
        if isinstance(value, str):
            return self.scrubbed(value)
        if isinstance(value, list):
            return [self.scrubbed_output(item) for item in value]
        if isinstance(value, dict):
            return {key: self.scrubbed_output(item) for key, item in value.items()}
        return value

    # -- what happens to it -----------------------------------------------------------

    def mark_started(self) -> None:
        if self.status == "starting":
            self.status = "processing"
            self.started_at = self.wall()

    def add_output(self, item: Any) -> None:
        item = self.scrubbed_output(item)
        self.last_item = item
        if self.method == PREDICT:  # an OpenAI stream's chunks only pass through
            if not isinstance(self.output, list):
                self.output = []
            self.output.append(item)
        self._publish(StreamEvent("output", item))

    def add_metric(self, metric: dict[str, Any]) -> None:
        """A metric the predictor just recorded, for live watchers (Cog's `metric` events);
        the prediction's `metrics` get the totals when it ends."""
        self._publish(StreamEvent("metric", metric))

    def keep_summary(self) -> None:
        """Once an OpenAI answer is delivered, keep only what the history needs of it."""
        self.output = openai_summary(self.output)

    def run_again(self, reason: str, allowed: int, where: str = "") -> None:
        """Back to the queue after its run was lost before it produced output, saying so in
        its logs and `metrics.retries` (its first run's logs stay above the note)."""
        self.retries += 1
        self.metrics["retries"] = self.retries
        self.status, self.started_at = "starting", None
        self.add_logs(
            f"\n[ember] {reason}; running it again{where} (retry {self.retries} of {allowed})\n"
        )

    def add_logs(self, text: str) -> None:
        text = self.scrubbed(text)
        self.logs += text
        self._publish(StreamEvent("logs", text))

    def finish(
        self,
        status: str,
        output: Any = None,
        error: str | None = None,
        metrics: dict[str, Any] | None = None,
    ) -> None:
        if self.terminal:
            return
        self.status = status
        if status == "succeeded":
            self.output = self.scrubbed_output(output)
        self.error = self.scrubbed(error) if error else error
        if metrics:
            self.metrics.update(metrics)
        self.completed_at = self.wall()
        if self.started_at:
            self.metrics.setdefault(
                "predict_time", (self.completed_at - self.started_at).total_seconds()
            )
        self.metrics["total_time"] = (self.completed_at - self.created_at).total_seconds()
        self._publish(StreamEvent("done"))
        self.done.set()

    # -- watchers -----------------------------------------------------------------------

    def subscribe(self) -> asyncio.Queue[StreamEvent]:
        """Events from now on; a finished prediction yields only `done`."""
        queue: asyncio.Queue[StreamEvent] = asyncio.Queue()
        if self.terminal:
            queue.put_nowait(StreamEvent("done"))
        else:
            self._subscribers.append(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[StreamEvent]) -> None:
        if queue in self._subscribers:
            self._subscribers.remove(queue)

    def _publish(self, event: StreamEvent) -> None:
        for queue in self._subscribers:
            queue.put_nowait(event)
        if event.kind == "done":
            self._subscribers.clear()

    # -- persistence --------------------------------------------------------------------

    def row(self) -> dict[str, Any]:
        """The record to persist; copies mutable parts (taken on the writer's thread)."""
        output = list(self.output) if isinstance(self.output, list) else self.output
        if self.method != PREDICT:
            output = openai_summary(output)
        return {
            "id": self.id,
            "owner": self.owner,
            "model": self.model,
            "version_id": self.version_id,
            "deployment": self.deployment,
            "token_id": self.token_id,
            "status": self.status,
            "input": self.stored_input if self.stored_input is not None else self.input,
            "output": output,
            "logs": self.logs,
            "error": self.error,
            "metrics": dict(self.metrics),
            "source": self.source,
            "stream": self.stream,
            "streams_output": self.streams_output,
            "webhook": self.webhook,
            "webhook_events_filter": self.webhook_events_filter,
            "context": self.stored_context,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "completed_at": self.completed_at,
        }

    @classmethod
    def from_row(
        cls,
        row: Any,
        files_dir: Path | None,
        wall: Callable[[], datetime.datetime] = utcnow,
    ) -> PredictionState:
        """A state rebuilt from a stored record (terminal ones are served as they are)."""
        state = cls(
            id=row.id,
            owner=row.owner,
            model=row.model,
            version_id=row.version_id,
            input=row.input,
            deployment=row.deployment,
            token_id=row.token_id,
            status=row.status,
            output=row.output,
            logs=row.logs or "",
            error=row.error,
            metrics=dict(row.metrics or {}),
            source=row.source,
            stream=row.stream,
            streams_output=row.streams_output,
            webhook=row.webhook,
            webhook_events_filter=row.webhook_events_filter,
            created_at=aware(row.created_at),
            started_at=aware(row.started_at),
            completed_at=aware(row.completed_at),
            files_dir=files_dir,
            wall=wall,
            acknowledged=True,
            retries=int((row.metrics or {}).get("retries", 0)),
        )
        if state.terminal:
            state.done.set()
        return state
