"""How an OpenAI request becomes a prediction of a deployment and its answer comes back: the
part the chat, completions and embeddings routes (`openai.py`) share with the Responses API
(`responses.py`), which sends its requests down the same chat-completions path.

The answer is bound to the caller's connection (nobody can ask for it later), so the
prediction is not durable and is canceled as soon as the caller hangs up. A stream's status
line goes out only with the first output, so a request the engine refuses still gets its 400.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from starlette.responses import StreamingResponse

from ember.control.access import Principal
from ember.control.deployments import Target
from ember.control.intake import Submission
from ember.control.platform import Platform
from ember.control.predictions import PredictionState, StreamEvent


@dataclass
class Relayed:
    """A submitted OpenAI request: `events` and `first` (its first output event, or its end
    when it succeeded without streaming any) are set when it streams, None when it does not
    or failed before its first output."""

    state: PredictionState
    events: asyncio.Queue[StreamEvent] | None = None
    first: StreamEvent | None = None


class ClientGone(Exception):
    """The caller hung up before the answer began; its prediction has been stopped."""


async def relay(
    request: Request,
    platform: Platform,
    target: Target,
    body: dict[str, Any],
    route: str,
    caller: Principal,
) -> Relayed:
    """Submit `body` to the deployment's handler for `route` and wait for its end (no stream)
    or its first output (a stream). Raises ClientGone when the caller hung up first."""
    submission = Submission(body, method=route, durable=False)
    accepted = await platform.intake.submit(target, submission, caller)
    state, events = accepted.state, accepted.events
    if events is None:
        if not await until_done_or_gone(request, state):
            platform.deployments.stop_prediction(state)
            raise ClientGone
        return Relayed(state)
    first = await first_event(request, state, events)
    if first is None:
        platform.deployments.stop_prediction(state)
        raise ClientGone
    if first.kind == "done" and state.status != "succeeded":
        return Relayed(state)  # failed before any output: a proper error status
    return Relayed(state, events, first)


class EventStream(StreamingResponse):
    """Server-sent events made from a prediction's output. However the response ends (the
    answer is complete, the client hung up, the server is stopping) a prediction still
    running is canceled: nobody is left to read it, and its replica has other work."""

    def __init__(
        self,
        platform: Platform,
        state: PredictionState,
        events: asyncio.Queue[StreamEvent],
        body: AsyncIterator[bytes],
    ) -> None:
        super().__init__(
            body,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self.platform, self.state, self.events = platform, state, events

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.state.unsubscribe(self.events)
            if not self.state.terminal:
                self.platform.deployments.stop_prediction(self.state)


async def outputs(events: asyncio.Queue[StreamEvent], first: StreamEvent) -> AsyncIterator[Any]:
    """The data of each output event from `first` until the prediction is done."""
    event = first
    while event.kind != "done":
        if event.kind == "output":
            yield event.data
        event = await events.get()


async def until_done_or_gone(request: Request, state: PredictionState) -> bool:
    """Wait for the prediction; False if the client hung up first (then it is canceled:
    nobody is left to read the answer)."""
    done = asyncio.ensure_future(state.done.wait())
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({done, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        done.cancel()
    return state.terminal


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def first_event(
    request: Request, state: PredictionState, events: asyncio.Queue[StreamEvent]
) -> StreamEvent | None:
    """The first output (or the end): only then does the status line go out, so a request
    the engine refuses still gets its 400. None when the client hung up first."""
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        while True:
            got = asyncio.ensure_future(events.get())
            try:
                await asyncio.wait({got, gone}, return_when=asyncio.FIRST_COMPLETED)
            except BaseException:
                got.cancel()
                raise
            if not got.done():  # the client hung up
                got.cancel()
                state.unsubscribe(events)
                return None
            event = got.result()
            if event.kind in ("output", "done"):
                return event
    finally:
        gone.cancel()


def failure_status(state: PredictionState) -> int:
    """The HTTP status of a prediction that did not succeed: 400 for a request the handler
    refused, 499 for one canceled, else 500."""
    return 400 if state.validation else 499 if state.status == "canceled" else 500


def error_body(state: PredictionState) -> dict[str, Any]:
    """OpenAI's error object for a prediction that did not succeed."""
    if state.validation:
        first = state.validation[0]
        param = first["loc"][-1] if len(first["loc"]) > 1 else None
        return {
            "error": {
                "message": first["msg"],
                "type": "invalid_request_error",
                "param": param,
                "code": None,
            }
        }
    return {
        "error": {
            "message": state.error or f"the prediction was {state.status}",
            "type": "server_error",
            "param": None,
            "code": state.status,
        }
    }
