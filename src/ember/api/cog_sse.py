"""Cog's server-sent events on the container API: `Accept: text/event-stream` on
`POST`/`PUT /predictions` of a model whose predict() is marked `@cog.streaming`.

Events as coglet names and shapes them, so a caller written for a Cog container reads them
unchanged: `start` {id, status}, `output` {chunk, index} per streamed item, `log`
{source, data}, and `completed` with the whole prediction response. A subscriber that comes
late (a second PUT with the same id) is replayed what it missed from a history of
`COG_STREAM_HISTORY_CAPACITY` events (the model's environment; 1024 by default, 0 keeps
none); when the history has dropped events it gets one `error` event saying how many, and the
stream ends, rather than a stream with a silent gap.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson

from ember.api import cog_shapes
from ember.api.serialize import files_in
from ember.control.platform import Platform
from ember.control.predictions import PredictionState

HISTORY_ENV = "COG_STREAM_HISTORY_CAPACITY"
DEFAULT_HISTORY = 1024
NOT_STREAMING = (
    "This model does not support streaming responses. "
    "Add @cog.streaming to predict() to enable SSE."
)
TRUNCATED = "SSE stream replay truncated; events were dropped"


def wants_events(accept: str | None) -> bool:
    """`text/event-stream` among the Accept header's media types (parameters ignored)."""
    return any(
        part.split(";")[0].strip().lower() == "text/event-stream"
        for part in (accept or "").split(",")
    )


def streams(openapi_schema: Mapping[str, Any]) -> bool:
    """Whether the version's predict() opted in (`x-cog-streaming` on POST /predictions)."""
    post = openapi_schema.get("paths", {}).get("/predictions", {}).get("post", {})
    return post.get("x-cog-streaming") is True


def history_capacity(environment: Mapping[str, str]) -> int:
    """The model's COG_STREAM_HISTORY_CAPACITY, as coglet reads it (a bad value: default)."""
    try:
        capacity = int(environment.get(HISTORY_ENV, DEFAULT_HISTORY))
    except ValueError:
        return DEFAULT_HISTORY
    return capacity if capacity >= 0 else DEFAULT_HISTORY


def _event(name: str, data: Any) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def _history(platform: Platform, state: PredictionState) -> list[tuple[str, Any]]:
    """What was emitted before this subscriber came, in order (logs as one event)."""
    events: list[tuple[str, Any]] = [("start", {"id": state.id, "status": "starting"})]
    if state.logs:
        events.append(("log", {"source": "stdout", "data": state.logs}))
    if state.streams_output and isinstance(state.output, list):
        for index, item in enumerate(state.output):
            chunk = files_in(platform, state, item, inline=False)
            events.append(("output", {"chunk": chunk, "index": index}))
    return events


async def events(platform: Platform, state: PredictionState, capacity: int) -> AsyncIterator[bytes]:
    queue = state.subscribe()
    try:
        history = _history(platform, state)
        index = sum(name == "output" for name, _ in history)
        if capacity == 0:
            history = []
        elif len(history) > capacity:
            skipped = len(history) - capacity
            yield _event("error", {"error": TRUNCATED, "skipped": skipped})
            return
        for name, data in history:
            yield _event(name, data)
        while True:
            event = await queue.get()
            if event.kind == "output" and state.streams_output:
                chunk = files_in(platform, state, event.data, inline=False)
                yield _event("output", {"chunk": chunk, "index": index})
                index += 1
            elif event.kind == "logs":
                yield _event("log", {"source": "stdout", "data": event.data})
            elif event.kind == "metric":
                yield _event("metric", event.data)
            elif event.kind == "done":
                yield _event("completed", cog_shapes.prediction(platform, state))
                return
    finally:
        state.unsubscribe(queue)
