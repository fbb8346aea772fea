"""Deployments: a named, configured way to run one version. Every PATCH is a new release."""

from __future__ import annotations

import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from ember.api import guards, serialize
from ember.api.auth import principal
from ember.api.errors import ApiError
from ember.api.responses import json_response
from ember.api.routes.costs import parse_since
from ember.api.strict_json import StrictJSONRoute
from ember.control.access import Principal, require, sees
from ember.control.hardware import DEFAULT_HARDWARE
from ember.control.platform import Platform
from ember.control.scaling import ColdStartTier

router = APIRouter(prefix="/v1", route_class=StrictJSONRoute)
Caller = Annotated[Principal, Depends(principal)]


class ScalingFields(BaseModel):
    """Ember's scaling settings beyond Replicate's min/max instances (see control/scaling.py)."""

    model_config = ConfigDict(strict=True)  # `false` is not 0, nor "5" a number

    target_concurrency: int | None = Field(default=None, ge=1, le=10_000)
    scale_up_delay: float | None = Field(default=None, ge=0, le=3600)
    scale_down_delay: float | None = Field(default=None, ge=0, le=3600)
    idle_timeout: float | None = Field(default=None, ge=0, le=24 * 3600)
    queue_limit: int | None = Field(default=None, ge=0, le=1_000_000)
    keep_warm: list[str] | None = Field(default=None, description='e.g. ["mon-fri 08:00-19:00=1"]')
    request_timeout: float | None = Field(default=None, gt=0, le=24 * 3600)
    cold_start_tier: ColdStartTier | None = Field(
        default=None, description="what to keep ready for starts: auto, warm-host, disk, cold"
    )
    prediction_retries: int | None = Field(
        default=None,
        ge=0,
        le=5,
        description="reruns of a prediction whose replica died before it produced output",
    )

    def scaling(self) -> dict[str, object]:
        return self.model_dump(include=set(ScalingFields.model_fields), exclude_none=True)


class DeploymentCreate(ScalingFields):
    name: str
    model: str = Field(description="owner/name")
    version: str | None = Field(default=None, description="defaults to the latest version")
    hardware: str = DEFAULT_HARDWARE
    min_instances: int = Field(default=0, ge=0, le=100)
    max_instances: int = Field(default=1, ge=1, le=100)


class DeploymentUpdate(ScalingFields):
    version: str | None = None
    hardware: str | None = None
    min_instances: int | None = Field(default=None, ge=0, le=100)
    max_instances: int | None = Field(default=None, ge=1, le=100)


async def _deploymentjson_response(platform: Platform, deployment, release) -> dict:  # type: ignore[no-untyped-def]
    target = platform.deployments.for_deployment(deployment.owner, deployment.name)
    return serialize.deployment(deployment, release, target.model, target.runner.status())


@router.get("/deployments")
async def list_deployments(request: Request, caller: Caller) -> Response:
    platform: Platform = request.app.state.platform
    items = [
        await _deploymentjson_response(platform, d, r)
        for d, r in await platform.deployments.all()
        if sees(caller, d.owner)
    ]
    return json_response(serialize.page(items))


@router.post("/deployments", status_code=201)
async def create_deployment(request: Request, body: DeploymentCreate, caller: Caller) -> Response:
    """Create a deployment under the caller's account, of a model it may read."""
    platform: Platform = request.app.state.platform
    require(caller, "deploy", "create deployments")
    model_owner, _, model_name = body.model.partition("/")
    if model_name:
        await guards.readable_model(platform, caller, model_owner, model_name)
    deployment, release = await platform.deployments.create(
        caller.owner,
        body.name,
        body.model,
        body.version,
        body.hardware,
        body.min_instances,
        body.max_instances,
        created_by=caller.owner,
        scaling=body.scaling(),
    )
    return json_response(await _deploymentjson_response(platform, deployment, release), 201)


@router.get("/deployments/{owner}/{name}")
async def get_deployment(request: Request, owner: str, name: str, caller: Caller) -> Response:
    platform: Platform = request.app.state.platform
    deployment, release = await guards.readable_deployment(platform, caller, owner, name)
    return json_response(await _deploymentjson_response(platform, deployment, release))


@router.patch("/deployments/{owner}/{name}")
async def update_deployment(
    request: Request, owner: str, name: str, body: DeploymentUpdate, caller: Caller
) -> Response:
    platform: Platform = request.app.state.platform
    guards.own_deployment(caller, owner, name, "change deployments")
    deployment, release = await platform.deployments.update(
        owner,
        name,
        created_by=caller.owner,
        version=body.version,
        hardware=body.hardware,
        min_instances=body.min_instances,
        max_instances=body.max_instances,
        scaling=body.scaling(),
    )
    return json_response(await _deploymentjson_response(platform, deployment, release))


@router.delete("/deployments/{owner}/{name}", status_code=204)
async def delete_deployment(request: Request, owner: str, name: str, caller: Caller) -> Response:
    platform: Platform = request.app.state.platform
    guards.own_deployment(caller, owner, name, "delete deployments")
    await platform.delete_deployment(owner, name)
    return Response(status_code=204)


@router.get("/deployments/{owner}/{name}/timeseries")
async def deployment_timeseries(
    request: Request,
    owner: str,
    name: str,
    caller: Caller,
    since: str = "1h",
    step: Annotated[int | None, Query(ge=1, le=86_400)] = None,
) -> Response:
    """The deployment's recent history for charts (an Ember extension), one value per bucket:
    requests per second, p50/p99 latency, failures, queue length, replicas starting and ready,
    replica cost and charges, and each replica start with its phases.

    `since` is a span (`15m`, `1h`, `7d`) or an ISO date, at most a year back (an earlier
    one is moved up to a year ago); `step` the bucket width in seconds (default: the readable
    width that gives at most 120 buckets). Queue and replica counts are sampled in memory
    every 2 s since the server started; the rest comes from the database.
    """
    platform: Platform = request.app.state.platform
    await guards.readable_deployment(platform, caller, owner, name)
    now = platform.insights.now()
    start = parse_since(since, now) or now - datetime.timedelta(hours=1)
    if start >= now:
        raise ApiError(400, f"since={since!r} is not in the past")
    return json_response(await platform.insights.timeseries(owner, name, start, step))
