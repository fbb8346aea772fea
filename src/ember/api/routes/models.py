"""Models and their versions. Uploading a package (an Ember extension: Replicate builds
versions with `cog push`) creates a version: its environment is built and a replica is set up
once to read its OpenAPI schema. Progress streams back as server-sent events."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Literal

import orjson
from fastapi import APIRouter, Depends, Request, UploadFile
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response, StreamingResponse

from ember.api import guards, serialize
from ember.api.auth import principal
from ember.api.errors import ApiError
from ember.api.responses import json_response
from ember.api.routes import openai
from ember.api.strict_json import StrictJSONRoute, strict_loads
from ember.control.access import Principal, acts_for, sees
from ember.control.errors import EmberError, NotFound
from ember.control.hardware import DEFAULT_HARDWARE
from ember.control.platform import Platform

router = APIRouter(prefix="/v1", route_class=StrictJSONRoute)
logger = logging.getLogger("ember.api")
Caller = Annotated[Principal, Depends(principal)]


class ModelCreate(BaseModel):
    model_config = ConfigDict(strict=True)  # `false` is not 0, nor "5" a number

    owner: str
    name: str
    visibility: Literal["public", "private"] = "private"
    hardware: str = DEFAULT_HARDWARE
    description: str | None = Field(default=None, max_length=10_000)


async def _modeljson_response(platform: Platform, record) -> dict:  # type: ignore[no-untyped-def]
    latest = None
    if record.latest_version_id:
        latest = await platform.catalogue.version(record.latest_version_id)
    return serialize.model(platform, record, latest)


@router.get("/models")
async def list_models(request: Request, caller: Caller) -> Response:
    """Replicate's page of models (`results`) and, in the same answer, OpenAI's list of the
    names its API accepts (`object: list`, `data`): both official clients read their part."""
    platform: Platform = request.app.state.platform
    records = [
        m
        for m in await platform.catalogue.models()
        if sees(caller, m.owner, m.visibility == "public")
    ]
    body = serialize.page([await _modeljson_response(platform, m) for m in records])
    body.update(object="list", data=openai.model_list(platform, caller))
    return json_response(body)


@router.api_route(
    "/models",
    methods=["QUERY"],
    responses={400: {"description": "no query, or one longer than 1000 bytes"}},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"text/plain": {"schema": {"type": "string", "maxLength": 1000}}},
        }
    },
)
async def search_models(request: Request, caller: Caller) -> Response:
    """Replicate's model search (`QUERY /v1/models`, the query as the plain-text body, or as
    a JSON string as the JavaScript client's `models.search` sends it): the models the caller
    may see whose owner/name or description holds every word of the query, ignoring case."""
    platform: Platform = request.app.state.platform
    body = await request.body()
    if len(body) > 1000:
        raise ApiError(400, "the search query is longer than 1000 bytes")
    query = body.decode("utf-8", "replace")
    with contextlib.suppress(ValueError):  # the JavaScript client JSON-encodes the text
        decoded = strict_loads(query)
        query = decoded if isinstance(decoded, str) else query
    words = query.lower().split()
    if not words:
        raise ApiError(400, "give the search query as the request's plain-text body")
    found = []
    for model in await platform.catalogue.models():
        if not sees(caller, model.owner, model.visibility == "public"):
            continue
        text = f"{model.owner}/{model.name} {model.description or ''}".lower()
        if all(word in text for word in words):
            found.append(await _modeljson_response(platform, model))
    return json_response(serialize.page(found))


@router.post("/models", status_code=201)
async def create_model(request: Request, body: ModelCreate, caller: Caller) -> Response:
    """Create a model under the caller's account (admins: any account)."""
    platform: Platform = request.app.state.platform
    if not acts_for(caller, body.owner, "deploy", "create models"):
        raise ApiError(
            403,
            f"this token acts for {caller.owner!r}: it cannot create models for "
            f"{body.owner!r} (use owner {caller.owner!r})",
        )
    record = await platform.catalogue.create_model(
        body.owner,
        body.name,
        visibility=body.visibility,
        hardware=body.hardware,
        description=body.description,
    )
    return json_response(await _modeljson_response(platform, record), 201)


@router.get("/models/{owner}/{name}")
async def get_model(request: Request, owner: str, name: str, caller: Caller) -> Response:
    """Replicate's model object; for a deployment OpenAI serves, with OpenAI's fields too
    (`openai.models.retrieve("owner/name")` lands here, also for a deployment named unlike
    its model)."""
    platform: Platform = request.app.state.platform
    target = platform.deployments.openai_models(guards.visible_owner(caller)).get(f"{owner}/{name}")
    try:
        record = await guards.readable_model(platform, caller, owner, name)
    except NotFound:
        if target is None:
            raise
        record = await platform.catalogue.model(*target.model.split("/", 1))
    body = await _modeljson_response(platform, record)
    if target is not None:
        body.update(openai.model_object(f"{owner}/{name}", target))
    return json_response(body)


@router.delete("/models/{owner}/{name}", status_code=204)
async def delete_model(request: Request, owner: str, name: str, caller: Caller) -> Response:
    platform: Platform = request.app.state.platform
    await guards.own_model(platform, caller, owner, name, "delete models")
    await platform.delete_model(owner, name)
    return Response(status_code=204)


@router.get("/models/{owner}/{name}/versions")
async def list_versions(request: Request, owner: str, name: str, caller: Caller) -> Response:
    platform: Platform = request.app.state.platform
    model = await guards.readable_model(platform, caller, owner, name)
    return json_response(
        serialize.page([serialize.version(v) for v in await platform.catalogue.versions(model)])
    )


@router.get("/models/{owner}/{name}/versions/{version_id}")
async def get_version(
    request: Request, owner: str, name: str, version_id: str, caller: Caller
) -> Response:
    platform: Platform = request.app.state.platform
    model = await guards.readable_model(platform, caller, owner, name)
    return json_response(serialize.version(await platform.catalogue.version(version_id, model)))


def _sse(kind: str, data: object) -> bytes:
    text = data if isinstance(data, str) else orjson.dumps(data).decode()
    lines = re.split(r"\r\n|\r|\n", text)
    return (f"event: {kind}\n" + "".join(f"data: {line}\n" for line in lines) + "\n").encode()


@router.post("/models/{owner}/{name}/versions", status_code=201)
async def create_version(
    request: Request, owner: str, name: str, package: UploadFile, caller: Caller
) -> Response:
    """Upload a package (.tar.gz of a folder with ember.yaml, cog.yaml or a Truss) as a new
    version. With `Accept: text/event-stream` the build's progress streams as `log` events,
    then a `version` or an `error` event."""
    platform: Platform = request.app.state.platform
    model = await guards.own_model(platform, caller, owner, name, "upload versions")
    handle, name = tempfile.mkstemp(prefix="ember-upload-", suffix=".tar.gz")
    spool = Path(name)
    with os.fdopen(handle, "wb") as out:
        while chunk := await package.read(1 << 20):
            out.write(chunk)
    lines: asyncio.Queue[str | None] = asyncio.Queue()

    async def build() -> dict:
        try:
            version = await platform.catalogue.create_version(model, spool, lines.put_nowait)
            return serialize.version(version)
        finally:
            spool.unlink(missing_ok=True)
            lines.put_nowait(None)

    task = asyncio.create_task(build())
    if "text/event-stream" not in request.headers.get("accept", ""):
        await _drain(lines)
        return json_response(await task, 201)

    async def events() -> AsyncIterator[bytes]:
        while (line := await lines.get()) is not None:
            yield _sse("log", line)
        try:
            yield _sse("version", await task)
        except EmberError as exc:
            yield _sse("error", {"detail": str(exc)})
        except Exception as exc:  # the stream must end with an error event, never just stop
            logger.exception("building a version of %s/%s failed", owner, name)
            yield _sse("error", {"detail": f"the build failed unexpectedly: {exc}"})

    return StreamingResponse(events(), media_type="text/event-stream", status_code=201)


async def _drain(lines: asyncio.Queue[str | None]) -> None:
    while await lines.get() is not None:
        pass
