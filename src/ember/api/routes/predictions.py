"""Predictions: create (by model, deployment or version), get, list, cancel, stream.

`Prefer: wait` (60 s) or `wait=n` (1-60) answers when the prediction ends; if time runs out
the answer says `starting`, which is what makes `replicate.run` poll instead of returning a
partial output. Without `Prefer: wait` the prediction is committed to the database before
the 201 goes out, so an acknowledged prediction survives a crash.
"""

from __future__ import annotations

import base64
import datetime
import re
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

import orjson
from fastapi import APIRouter, Depends, Header, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response, StreamingResponse

from ember.api import guards, serialize
from ember.api.auth import link_or_principal, principal
from ember.api.errors import ApiError
from ember.api.responses import json_response
from ember.api.strict_json import StrictJSONRoute
from ember.control.access import Principal
from ember.control.deployments import Target
from ember.control.intake import Submission
from ember.control.platform import Platform
from ember.control.predictions import PredictionState

router = APIRouter(prefix="/v1", route_class=StrictJSONRoute)
Caller = Annotated[Principal, Depends(principal)]
PAGE_SIZE = 100
MAX_WAIT = 60
_WAIT = re.compile(r"wait(?:=([0-9]{1,2}))?", re.IGNORECASE)
WebhookEvent = Literal["start", "output", "logs", "completed"]
PREFER_PARAMETER = {
    "parameters": [
        {
            "name": "Prefer",
            "in": "header",
            "required": False,
            "schema": {"type": "string"},
            "description": "`wait` (60 s) or `wait=N` (1-60): answer when the prediction ends; "
            "`files=data-uri` or `files=url` for output files",
        }
    ]
}


class PredictionRequest(BaseModel):
    model_config = ConfigDict(strict=True)  # `false` is not 0, nor "5" a number

    input: dict[str, Any] = Field(default_factory=dict)
    webhook: str | None = Field(default=None, max_length=2048)
    webhook_events_filter: list[WebhookEvent] | None = None
    stream: bool = False


class VersionPredictionRequest(PredictionRequest):
    version: str = Field(min_length=1, description="version id, or owner/name:version")


def parse_prefer(header: str | None) -> tuple[float | None, bool | None]:
    """(seconds to wait or None, inline files?) from a Prefer header."""
    wait: float | None = None
    inline: bool | None = None
    for part in (header or "").split(","):
        token = part.strip()
        if not token:
            continue
        for item in token.split(";"):
            key, _, value = item.strip().partition("=")
            key = key.strip().lower()
            if key == "wait":
                wait = _wait(item.strip())
            elif key == "files":
                inline = value.strip() == "data-uri"
    return wait, inline


def _wait(item: str) -> int:
    """The seconds `wait` or `wait=N` asks for. Strictly that form: a blank, spaced, signed
    or out-of-range N is refused (400) rather than read as something the client did not
    write (`wait=` was once the full 60 s)."""
    match = _WAIT.fullmatch(item)
    seconds = int(match[1] or MAX_WAIT) if match else 0
    if not 1 <= seconds <= MAX_WAIT:
        raise ApiError(
            400,
            f"Prefer: {item} is invalid: use `Prefer: wait` ({MAX_WAIT} s) or "
            f"`Prefer: wait=N` with N a whole number of seconds between 1 and {MAX_WAIT}",
        )
    return seconds


async def _create(
    request: Request,
    target: Target,
    body: PredictionRequest,
    caller: Principal,
) -> Response:
    platform: Platform = request.app.state.platform
    # Read directly: a declared Header() parameter costs a dependency-resolution pass.
    wait, inline = parse_prefer(request.headers.get("prefer"))
    submission = Submission(
        body.input,
        webhook=body.webhook,
        webhook_events_filter=body.webhook_events_filter,
        stream=body.stream,
        wait=wait,
    )
    accepted = await platform.intake.submit(target, submission, caller)
    state, finished = accepted.state, accepted.finished
    headers = {} if wait is None else {"Preference-Applied": f"wait={wait:g}"}
    payload = serialize.prediction(platform, state, inline if inline is not None else finished)
    if wait is not None and not finished:
        payload["status"] = "starting"  # makes replicate.run poll rather than stop early
    headers["Location"] = payload["urls"]["get"]
    return json_response(payload, 201, headers)


@router.post("/predictions", status_code=201, openapi_extra=PREFER_PARAMETER)
async def create_prediction(
    request: Request,
    body: VersionPredictionRequest,
    caller: Caller,
) -> Response:
    """Create a prediction for a model version."""
    platform: Platform = request.app.state.platform
    target = await guards.version_target(platform, caller, body.version)
    return await _create(request, target, body, caller)


@router.post("/models/{owner}/{name}/predictions", status_code=201, openapi_extra=PREFER_PARAMETER)
async def create_model_prediction(
    request: Request,
    owner: str,
    name: str,
    body: PredictionRequest,
    caller: Caller,
) -> Response:
    """Create a prediction for a model (its deployment of the same name, or latest version)."""
    platform: Platform = request.app.state.platform
    target = await guards.model_target(platform, caller, owner, name)
    return await _create(request, target, body, caller)


@router.post(
    "/deployments/{owner}/{name}/predictions", status_code=201, openapi_extra=PREFER_PARAMETER
)
async def create_deployment_prediction(
    request: Request,
    owner: str,
    name: str,
    body: PredictionRequest,
    caller: Caller,
) -> Response:
    """Create a prediction on a deployment."""
    platform: Platform = request.app.state.platform
    target = guards.deployment_target(platform, caller, owner, name)
    return await _create(request, target, body, caller)


@router.get("/predictions/{prediction_id}")
async def get_prediction(
    request: Request,
    prediction_id: str,
    caller: Caller,
    prefer: Annotated[str | None, Header()] = None,
) -> Response:
    platform: Platform = request.app.state.platform
    _, inline = parse_prefer(prefer)
    state = await guards.readable_prediction(platform, caller, prediction_id)
    return json_response(serialize.prediction(platform, state, bool(inline)))


@router.post("/predictions/{prediction_id}/cancel")
async def cancel_prediction(request: Request, prediction_id: str, caller: Caller) -> Response:
    platform: Platform = request.app.state.platform
    await guards.readable_prediction(platform, caller, prediction_id)
    state = await platform.intake.cancel(prediction_id)
    return json_response(serialize.prediction(platform, state))


def _cursor(state: PredictionState) -> str:
    raw = f"{state.created_at.isoformat()}|{state.id}".encode()
    return base64.urlsafe_b64encode(raw).decode()


def _parse_cursor(cursor: str) -> tuple[datetime.datetime, str]:
    try:
        created_at, _, prediction_id = base64.urlsafe_b64decode(cursor).decode().partition("|")
        return datetime.datetime.fromisoformat(created_at), prediction_id
    except ValueError:
        raise ApiError(400, "invalid cursor: pass back the `next` URL as given") from None


STATUSES = ("starting", "processing", "succeeded", "failed", "canceled")


@router.get("/predictions")
async def list_predictions(
    request: Request,
    caller: Caller,
    cursor: Annotated[str | None, Query()] = None,
    status: Annotated[str | None, Query(description="one status, e.g. failed")] = None,
    model: Annotated[str | None, Query(description="owner/name of a model")] = None,
    deployment: Annotated[str | None, Query(description="owner/name of a deployment")] = None,
) -> Response:
    """Predictions, newest first, 100 a page; `next` is the URL of the next page. Ember also
    filters by `status`, `model` and `deployment` (the `next` URL keeps the filters)."""
    platform: Platform = request.app.state.platform
    if status is not None and status not in STATUSES:
        raise ApiError(400, f"status={status!r} is not one of {', '.join(STATUSES)}")
    filters = {"status": status, "model": model, "deployment": deployment}
    before = _parse_cursor(cursor) if cursor else None
    owner = guards.visible_owner(caller)  # one's own; an admin sees every owner's
    states = await platform.book.page(PAGE_SIZE + 1, before, owner=owner, **filters)
    more = len(states) > PAGE_SIZE
    states = states[:PAGE_SIZE]
    next_url = None
    if more:
        query = {"cursor": _cursor(states[-1]), **{k: v for k, v in filters.items() if v}}
        next_url = f"{platform.public_url}/v1/predictions?{urlencode(query)}"
    return json_response(
        serialize.page([serialize.prediction(platform, s) for s in states], next_url)
    )


# -- server-sent events -----------------------------------------------------------------


_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def _event(kind: str, data: str, event_id: int) -> bytes:
    """One SSE event; data split on every line ending SSE knows (a bare \r ends a line too)."""
    lines = [f"event: {kind}", f"id: {event_id}"]
    lines += [f"data: {line}" for line in _LINE_BREAK.split(data)]
    return ("\n".join(lines) + "\n\n").encode()


def _item_text(platform: Platform, state: PredictionState, item: Any) -> str:
    item = serialize.files_in(platform, state, item, inline=False)
    return item if isinstance(item, str) else orjson.dumps(item).decode()


async def _events(platform: Platform, state: PredictionState) -> AsyncIterator[bytes]:
    queue = state.subscribe()
    replay = list(state.output) if state.streams_output and isinstance(state.output, list) else []
    logs_so_far = state.logs
    event_id = 0
    try:
        if logs_so_far:  # what was logged before this client connected
            event_id += 1
            yield _event("logs", logs_so_far, event_id)
        for item in replay:
            event_id += 1
            yield _event("output", _item_text(platform, state, item), event_id)
        while True:
            event = await queue.get()
            event_id += 1
            if event.kind == "output":
                yield _event("output", _item_text(platform, state, event.data), event_id)
            elif event.kind == "logs":
                yield _event("logs", event.data, event_id)
            elif event.kind == "done":
                if not state.streams_output and state.status == "succeeded":
                    yield _event("output", _item_text(platform, state, state.output), event_id)
                    event_id += 1
                if state.status == "failed":
                    yield _event("error", state.error or "prediction failed", event_id)
                    event_id += 1
                reason = {"reason": "canceled"} if state.status == "canceled" else {}
                yield _event("done", orjson.dumps(reason).decode(), event_id)
                return
    finally:
        state.unsubscribe(queue)


@router.get("/predictions/{prediction_id}/stream")
async def stream_prediction(
    request: Request,
    prediction_id: str,
    expires: Annotated[str | None, Query()] = None,
    signature: Annotated[str | None, Query()] = None,
) -> Response:
    """Server-sent events in Replicate's format: output, logs, error, done — each with an id.
    Opened with the signed `urls.stream` of the prediction (no token), or with a token."""
    platform: Platform = request.app.state.platform
    caller = await link_or_principal(request, expires, signature)
    if caller is None:
        state = await platform.book.get(prediction_id)
    else:
        state = await guards.readable_prediction(platform, caller, prediction_id)
    return StreamingResponse(
        _events(platform, state),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
