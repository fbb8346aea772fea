"""OpenAI's Responses API: `POST /v1/responses` (plain or streamed), `GET` and `DELETE
/v1/responses/{id}`, `GET /v1/responses/{id}/input_items`, and `previous_response_id`.

A response is a chat completion of the deployment the `model` field names: the request is
translated at the gateway (`responses_input.py`), submitted down the chat path every OpenAI
route takes (`openai_relay.py`: an ordinary prediction, queued, scaled from zero, metered),
and its answer or chunks translated back (`responses_output.py`). So any deployment that
serves chat completions (the engines, predictors with Truss's hooks) serves this API too.
The response id is `resp_` + the prediction's id, so it can be found in Ember's history.

Stored responses (`store`, true unless asked otherwise, as OpenAI's) are kept **in memory**,
per account, the 1,000 most recent of each account (older ones are forgotten first): they
serve `GET`, `DELETE`, `input_items` and a later `previous_response_id`, and they do not
survive a restart of `ember serve` (OpenAI keeps them 30 days). Another account's response
answers 404, exactly like an id that does not exist; admins see every account's.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from ember.api import guards
from ember.api.auth import principal
from ember.api.responses import json_response
from ember.api.routes import responses_output as output
from ember.api.routes.openai_relay import (
    ClientGone,
    EventStream,
    error_body,
    failure_status,
    outputs,
    relay,
)
from ember.api.routes.responses_input import translate
from ember.api.strict_json import StrictJSONRoute
from ember.control.access import Principal, sees
from ember.control.platform import Platform
from ember.control.predictions import PredictionState

router = APIRouter(prefix="/v1", tags=["openai"], route_class=StrictJSONRoute)
Caller = Annotated[Principal, Depends(principal)]
ROUTE = "chat.completions"
KEPT_PER_ACCOUNT = 1000


class ResponsesRequest(BaseModel):
    """The fields of OpenAI's `POST /v1/responses` Ember reads. Input items, tools and
    formats are checked where they are translated, with messages naming the item at fault.
    Other fields pass through to the chat request (an engine's `seed` or `top_k`), which
    refuses what it cannot honour."""

    model_config = ConfigDict(extra="allow", strict=True)

    model: str = Field(min_length=1, description="a deployment (owner/name) or an alias")
    input: str | list[dict[str, Any]] | None = None
    instructions: str | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stream: bool = False
    store: bool = True
    previous_response_id: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    text: dict[str, Any] | None = None
    include: list[str] | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    metadata: dict[str, str] | None = None
    user: str | None = None
    truncation: Literal["auto", "disabled"] | None = None
    reasoning: dict[str, Any] | None = None
    background: bool | None = None


@dataclass
class Stored:
    """One stored response: the object, its input as listed items, and the conversation up
    to and including it (chat messages, for `previous_response_id`)."""

    owner: str
    response: dict[str, Any]
    items: list[dict[str, Any]]
    messages: list[dict[str, Any]] = field(default_factory=list)


class ResponseStore:
    """Stored responses in memory, the `limit` most recent per account (see the module
    docstring for why not in the database)."""

    def __init__(self, limit: int = KEPT_PER_ACCOUNT) -> None:
        self.limit = limit
        self._accounts: dict[str, OrderedDict[str, Stored]] = {}
        self._owner_of: dict[str, str] = {}

    def put(self, stored: Stored) -> None:
        kept = self._accounts.setdefault(stored.owner, OrderedDict())
        response_id = stored.response["id"]
        kept[response_id] = stored
        self._owner_of[response_id] = stored.owner
        while len(kept) > self.limit:
            forgotten, _ = kept.popitem(last=False)
            self._owner_of.pop(forgotten, None)

    def get(self, caller: Principal, response_id: str) -> Stored | None:
        """The response if the caller may see it (its account's, or any for admins)."""
        owner = self._owner_of.get(response_id)
        if owner is None or not sees(caller, owner):
            return None
        return self._accounts[owner].get(response_id)

    def delete(self, caller: Principal, response_id: str) -> bool:
        if self.get(caller, response_id) is None:
            return False
        owner = self._owner_of.pop(response_id)
        del self._accounts[owner][response_id]
        return True


def _store(request: Request) -> ResponseStore:
    """The app's store, made on first use (it lives as long as the app)."""
    state = request.app.state
    store = getattr(state, "openai_responses", None)
    if store is None:
        store = state.openai_responses = ResponseStore()
    return store


# Chat fields an engine's refusal may name → the Responses field the caller sent.
PARAMS = {
    "messages": "input",
    "max_tokens": "max_output_tokens",
    "max_completion_tokens": "max_output_tokens",
    "response_format": "text",
    "logprobs": "include",
}


def _error(state: PredictionState) -> dict[str, Any]:
    """OpenAI's error for a failed response, naming the field in the Responses API's words."""
    body = error_body(state)
    param = body["error"]["param"]
    body["error"]["param"] = PARAMS.get(param, param)
    return body


def _not_found(message: str, param: str | None = None, code: str | None = None) -> Response:
    error = {"message": message, "type": "invalid_request_error", "param": param, "code": code}
    return json_response({"error": error}, 404)


@router.post("/responses")
async def create_response(request: Request, body: ResponsesRequest, caller: Caller) -> Response:
    """Generate a response with an LLM deployment; `stream: true` answers with OpenAI's
    Responses events as server-sent events."""
    platform: Platform = request.app.state.platform
    store = _store(request)
    fields = body.model_dump(exclude_none=True)
    history: list[dict[str, Any]] = []
    if body.previous_response_id is not None:
        previous = store.get(caller, body.previous_response_id)
        if previous is None:
            return _not_found(
                f"Previous response with id '{body.previous_response_id}' not found.",
                "previous_response_id",
                "previous_response_not_found",
            )
        history = previous.messages
    translated = translate(fields, history)
    target = guards.openai_target(platform, caller, body.model, ROUTE)
    try:
        relayed = await relay(request, platform, target, translated.chat, ROUTE, caller)
    except ClientGone:
        return Response(status_code=499)
    state = relayed.state
    response = output.frame("resp_" + state.id, fields)

    def keep(final: dict[str, Any]) -> None:
        if body.store:
            messages = [*translated.messages, *output.conversation(final["output"])]
            store.put(Stored(state.owner, final, translated.items, [*history, *messages]))

    if relayed.events is None or relayed.first is None:
        if state.status != "succeeded":
            return json_response(_error(state), failure_status(state))
        final = output.answered(response, state.output, state.metrics)
        keep(final)
        state.keep_summary()
        return json_response(final)
    events = output.Events(response)
    stream = _sse(state, events, outputs(relayed.events, relayed.first), keep)
    return EventStream(platform, state, relayed.events, stream)


async def _sse(
    state: PredictionState,
    events: output.Events,
    chunks: AsyncIterator[Any],
    keep: Callable[[dict[str, Any]], None],
) -> AsyncIterator[bytes]:
    """The stream's events, each as OpenAI frames them: `event: <type>` and `data: <json>`
    (no `[DONE]`: the Responses API ends with its terminal event)."""
    for event in events.start():
        yield _frame(event)
    async for chunk in chunks:
        for event in events.chunk(chunk):
            yield _frame(event)
    if state.status == "succeeded":
        if isinstance(state.output, dict):  # a handler that answered whole though asked to stream
            for event in events.whole(state.output):
                yield _frame(event)
        ending = events.end(state.metrics)
    else:
        ending = events.failed(_error(state)["error"]["message"], state.metrics)
    for event in ending:
        yield _frame(event)
    keep(events.response)
    state.keep_summary()


def _frame(event: dict[str, Any]) -> bytes:
    return b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


@router.get("/responses/{response_id}")
async def retrieve_response(request: Request, response_id: str, caller: Caller) -> Response:
    """A stored response (404 when it was not stored, was deleted, or is another account's)."""
    stored = _store(request).get(caller, response_id)
    if stored is None:
        return _not_found(f"Response with id '{response_id}' not found.")
    return json_response(stored.response)


@router.delete("/responses/{response_id}")
async def delete_response(request: Request, response_id: str, caller: Caller) -> Response:
    """Forget a stored response."""
    if not _store(request).delete(caller, response_id):
        return _not_found(f"Response with id '{response_id}' not found.")
    return json_response({"id": response_id, "object": "response", "deleted": True})


@router.get("/responses/{response_id}/input_items")
async def list_input_items(
    request: Request,
    response_id: str,
    caller: Caller,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Literal["asc", "desc"] = "desc",
) -> Response:
    """The input items of a stored response, as OpenAI pages them (newest first unless
    `order=asc`; `after` an item id)."""
    stored = _store(request).get(caller, response_id)
    if stored is None:
        return _not_found(f"Response with id '{response_id}' not found.")
    items = stored.items if order == "asc" else stored.items[::-1]
    if after is not None:
        ids = [item["id"] for item in items]
        items = items[ids.index(after) + 1 :] if after in ids else []
    page = items[:limit]
    return json_response(
        {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": len(items) > limit,
        }
    )
