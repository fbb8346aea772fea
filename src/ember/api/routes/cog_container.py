"""Cog's container HTTP API on every deployment, under /cog/{owner}/{name}/.

Teams that run Cog containers on their own machines call them at `POST /predictions`,
`PUT /predictions/{id}`, `POST /predictions/{id}/cancel`, `GET /health-check` and
`GET /openapi.json`. The same requests work here with only the base URL changed (and a
bearer token, as everywhere in Ember), answered as Cog's server (`cog.server.http`) answers:

- synchronous by default: the answer comes when the prediction ends, in Cog's
  `PredictionResponse` shape (200 whether it succeeded, failed or was canceled);
  `Prefer: respond-async` answers 202 at once, and webhooks carry the rest;
- `PUT /predictions/{id}` names the prediction: sent again with the same id, it answers with
  that prediction's state instead of running another (202 while it runs, as Cog; 200 with
  its end once it has ended, where Cog would have forgotten it and run it again). Ember keeps
  predictions, so a PUT retried after a lost connection, or after a restart, finds its own;
- `Accept: text/event-stream` (a model marked `@cog.streaming`) answers with Cog's
  server-sent events instead (`cog_sse.py`); 406 for a model that did not opt in;
- cancel answers `{}`, or 404 when no running prediction of this deployment has the id;
- input is validated against the version's schema (422 with Cog's `detail` list).

The prediction is an ordinary Ember prediction on the deployment: it is queued, scaled for,
billed, listed and readable under `/v1/predictions/{id}` like any other.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Path, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response, StreamingResponse

from ember.api import cog_shapes, cog_sse, guards
from ember.api.auth import principal
from ember.api.responses import json_response
from ember.api.strict_json import StrictJSONRoute
from ember.control.access import Principal, sees
from ember.control.deployments import Target
from ember.control.errors import Conflict, InvalidRequest, NotFound
from ember.control.intake import Submission
from ember.control.platform import Platform
from ember.control.predictions import PredictionState

router = APIRouter(prefix="/cog/{owner}/{name}", tags=["cog"], route_class=StrictJSONRoute)
Caller = Annotated[Principal, Depends(principal)]
WebhookEvent = Literal["start", "output", "logs", "completed"]
PREFER_PARAMETER = {
    "parameters": [
        {
            "name": "Prefer",
            "in": "header",
            "required": False,
            "schema": {"type": "string"},
            "description": "`respond-async`: answer 202 at once instead of when it ends",
        }
    ]
}
ACCEPTED = {
    202: {
        "description": "`Prefer: respond-async`, or the prediction with the id still runs: "
        "its state so far"
    }
}


class CogPredictionRequest(BaseModel):
    """Cog's `PredictionRequest`. `output_file_prefix` is accepted as Cog accepts it; output
    files come back as data URIs or Ember's links whatever the prefix. `context` reaches the
    predictor as `current_scope().context` (stored sealed, never shown)."""

    model_config = ConfigDict(strict=True)  # `false` is not 0, nor "5" a number

    input: dict[str, Any] | None = None  # Cog: a missing or null input is `{}`
    id: str | None = None
    webhook: str | None = Field(default=None, max_length=2048)
    webhook_events_filter: list[WebhookEvent] | None = None  # Cog: null is every event
    output_file_prefix: str | None = None
    context: dict[str, str] | None = None


def _respond_async(prefer: str | None) -> bool:
    """`Prefer: respond-async`, also beside other preferences (Cog compares the whole
    header; a header that says only that is read the same here)."""
    for part in (prefer or "").split(","):
        if part.split(";")[0].strip().lower() == "respond-async":
            return True
    return False


# One check-then-create at a time per id, so that two PUTs racing with one id make one
# prediction: id -> (its lock, how many requests hold or wait for it).
_claims: dict[str, tuple[asyncio.Lock, int]] = {}


@asynccontextmanager
async def _claimed(prediction_id: str) -> AsyncIterator[None]:
    lock, users = _claims.get(prediction_id, (asyncio.Lock(), 0))
    _claims[prediction_id] = (lock, users + 1)
    try:
        async with lock:
            yield
    finally:
        lock, users = _claims[prediction_id]
        if users == 1:
            del _claims[prediction_id]
        else:
            _claims[prediction_id] = (lock, users - 1)


async def _existing(
    platform: Platform, caller: Principal, target: Target, prediction_id: str
) -> PredictionState | None:
    """The prediction this deployment already has under the id, if any. An id taken
    elsewhere (another deployment's, another owner's) cannot be given again: 409, which
    says no more than that the id is taken."""
    try:
        state = await platform.book.get(prediction_id)
    except NotFound:
        return None
    if sees(caller, state.owner) and state.deployment == target.deployment:
        return state
    raise Conflict(f"prediction id {prediction_id} is taken: choose another id")


async def _predict(
    request: Request,
    owner: str,
    name: str,
    body: CogPredictionRequest | None,
    caller: Principal,
    prediction_id: str | None,
) -> Response:
    platform: Platform = request.app.state.platform
    target = guards.deployment_target(platform, caller, owner, name)
    body = body or CogPredictionRequest()
    respond_async = _respond_async(request.headers.get("prefer"))
    sse = cog_sse.wants_events(request.headers.get("accept"))
    if sse and not cog_sse.streams(target.version.openapi_schema):
        return json_response({"error": cog_sse.NOT_STREAMING}, 406)
    submission = Submission(
        body.input or {},
        webhook=body.webhook,
        webhook_events_filter=body.webhook_events_filter,
        id=prediction_id,
        context=body.context,
    )
    if prediction_id is None:
        accepted = await platform.intake.submit(target, submission, caller)
    else:
        async with _claimed(prediction_id):
            state = await _existing(platform, caller, target, prediction_id)
            if state is not None and sse:
                return _event_stream(platform, target, state)
            if state is not None and state.terminal:
                return json_response(cog_shapes.prediction(platform, state, inline_files=True))
            if state is not None:
                return json_response(cog_shapes.prediction(platform, state), 202)
            accepted = await platform.intake.submit(target, submission, caller)
    state = accepted.state
    if sse:
        return _event_stream(platform, target, state)
    if respond_async:
        return json_response(cog_shapes.prediction(platform, state), 202)
    await state.done.wait()
    return json_response(cog_shapes.prediction(platform, state, inline_files=True))


def _event_stream(platform: Platform, target: Target, state: PredictionState) -> Response:
    capacity = cog_sse.history_capacity(target.runner.spec.environment)
    return StreamingResponse(
        cog_sse.events(platform, state, capacity),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.post("/predictions", openapi_extra=PREFER_PARAMETER, responses=ACCEPTED)
async def create_prediction(
    request: Request,
    owner: str,
    name: str,
    caller: Caller,
    body: Annotated[CogPredictionRequest | None, Body()] = None,
) -> Response:
    """Run a prediction on the deployment; answers when it ends (`Prefer: respond-async`:
    202 at once). An `id` in the body names it, as with PUT."""
    prediction_id = body.id if body is not None else None
    return await _predict(request, owner, name, body, caller, prediction_id)


@router.put("/predictions/{prediction_id}", openapi_extra=PREFER_PARAMETER, responses=ACCEPTED)
async def create_prediction_idempotent(
    request: Request,
    owner: str,
    name: str,
    prediction_id: Annotated[str, Path(title="Prediction ID")],
    caller: Caller,
    body: Annotated[CogPredictionRequest | None, Body()] = None,
) -> Response:
    """Run a prediction named `prediction_id`, or answer with the one that has that id."""
    if body is not None and body.id is not None and body.id != prediction_id:
        raise InvalidRequest(
            "Invalid request body",
            [
                {
                    "loc": ["body", "id"],
                    "msg": "prediction ID must match the ID supplied in the URL",
                    "type": "value_error",
                }
            ],
        )
    return await _predict(request, owner, name, body, caller, prediction_id)


@router.post("/predictions/{prediction_id}/cancel")
async def cancel_prediction(
    request: Request, owner: str, name: str, prediction_id: str, caller: Caller
) -> Response:
    """Cancel a running prediction of the deployment: `{}`, or 404 when none by that id
    runs (Cog forgets a prediction once it ends, so an ended one is a 404 too). A prediction
    already canceled answers `{}` again: Cog keeps a canceled one until its worker lets go, so
    a client repeating its cancel (a retry, an impatient loop) sees success, not a 404."""
    platform: Platform = request.app.state.platform
    target = guards.deployment_target(platform, caller, owner, name)
    try:
        state = await platform.book.get(prediction_id)
    except NotFound:
        state = None
    mine = state is not None and sees(caller, state.owner)
    if state is None or not mine or state.deployment != target.deployment:
        raise NotFound(f"No running prediction {prediction_id} on deployment {owner}/{name}")
    if state.status == "canceled":
        return json_response({})
    if state.terminal:
        raise NotFound(f"No running prediction {prediction_id} on deployment {owner}/{name}")
    await platform.intake.cancel(prediction_id)
    return json_response({})


@router.get("/")
async def index(request: Request, owner: str, name: str, caller: Caller) -> Response:
    """Cog's discovery document: where each route is (under this prefix; Ember has no
    per-deployment `/docs` or `/shutdown`, nor Cog's `/trainings`)."""
    platform: Platform = request.app.state.platform
    target = guards.deployment_target(platform, caller, owner, name)
    base = f"/cog/{owner}/{name}"
    return json_response(
        {
            "cog_version": target.version.cog_version,
            "openapi_url": f"{base}/openapi.json",
            "healthcheck_url": f"{base}/health-check",
            "predictions_url": f"{base}/predictions",
            "predictions_idempotent_url": f"{base}/predictions/{{prediction_id}}",
            "predictions_cancel_url": f"{base}/predictions/{{prediction_id}}/cancel",
        }
    )


@router.get("/health-check")
async def health_check(request: Request, owner: str, name: str, caller: Caller) -> Response:
    """Cog's health-check, read from the deployment's replicas and its model's own
    healthcheck (see `cog_shapes.health`)."""
    platform: Platform = request.app.state.platform
    target = guards.deployment_target(platform, caller, owner, name)
    user_error = await target.runner.healthcheck()
    return json_response(cog_shapes.health(target.runner, user_error))


@router.get("/openapi.json")
async def openapi_schema(request: Request, owner: str, name: str, caller: Caller) -> Response:
    """The deployment's current version's Cog OpenAPI document. Its `servers` entry points
    at this prefix, so the document's `/predictions` paths resolve to Ember's."""
    platform: Platform = request.app.state.platform
    target = guards.deployment_target(platform, caller, owner, name)
    document = dict(target.version.openapi_schema or {})
    document["servers"] = [{"url": f"{platform.public_url}/cog/{owner}/{name}"}]
    return json_response(document)
