"""Uploaded input files (POST /v1/files) and signed downloads of inputs and outputs."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Query, Request, UploadFile
from starlette.responses import Response

from ember.api import guards, serialize
from ember.api.auth import link_or_principal, principal
from ember.api.errors import ApiError
from ember.api.responses import json_response
from ember.api.served_files import served_file
from ember.api.strict_json import StrictJSONRoute, strict_loads
from ember.control.access import Principal
from ember.control.platform import Platform

router = APIRouter(prefix="/v1", route_class=StrictJSONRoute)
Caller = Annotated[Principal, Depends(principal)]
MAX_METADATA = 64 * 1024  # a file's JSON metadata, in bytes


@router.post("/files", status_code=201)
async def upload_file(
    request: Request,
    content: UploadFile,
    caller: Caller,
    filename: Annotated[str | None, Form()] = None,
    type: Annotated[str | None, Form()] = None,
    metadata: Annotated[str | UploadFile | None, Form()] = None,
) -> Response:
    """Upload a file (multipart field `content`) to use as a prediction input. `metadata` is
    a JSON object, as a text field (Python client) or a JSON part (JavaScript client)."""
    platform: Platform = request.app.state.platform
    if not isinstance(metadata, str | None):
        metadata = (await metadata.read(MAX_METADATA + 1)).decode("utf-8", "replace")
    if metadata and len(metadata) > MAX_METADATA:
        raise ApiError(422, f"metadata is larger than {MAX_METADATA} bytes")
    try:
        meta = strict_loads(metadata) if metadata else {}
    except json.JSONDecodeError as exc:
        raise ApiError(422, f"metadata must be a JSON object ({exc.msg})") from None
    if not isinstance(meta, dict):
        raise ApiError(422, "metadata must be a JSON object")
    handle, name = tempfile.mkstemp(prefix="ember-file-")
    spool = Path(name)
    with os.fdopen(handle, "wb") as out:
        while chunk := await content.read(1 << 20):
            out.write(chunk)
    record = await platform.files.add(
        caller.owner,
        spool,
        filename or content.filename or "file",
        type or content.content_type or "application/octet-stream",
        meta,
    )
    return json_response(serialize.file(platform, record), 201)


@router.get("/files")
async def list_files(request: Request, caller: Caller) -> Response:
    platform: Platform = request.app.state.platform
    records = await platform.files.of_owner(caller.owner)
    return json_response(serialize.page([serialize.file(platform, r) for r in records]))


@router.get("/files/{file_id}")
async def get_file(request: Request, file_id: str, caller: Caller) -> Response:
    platform: Platform = request.app.state.platform
    record = await guards.readable_file(platform, caller, file_id)
    return json_response(serialize.file(platform, record))


@router.delete("/files/{file_id}", status_code=204)
async def delete_file(request: Request, file_id: str, caller: Caller) -> Response:
    platform: Platform = request.app.state.platform
    await guards.readable_file(platform, caller, file_id)
    await platform.files.delete(file_id)
    return Response(status_code=204)


@router.get("/files/{file_id}/download")
async def download_file(
    request: Request,
    file_id: str,
    expires: Annotated[str | None, Query()] = None,
    signature: Annotated[str | None, Query()] = None,
) -> Response:
    """The file's bytes: with a token, or with a signed link (how replicas fetch inputs)."""
    caller = await link_or_principal(request, expires, signature)
    platform: Platform = request.app.state.platform
    if caller is None:
        record = await platform.files.get(file_id)
    else:
        record = await guards.readable_file(platform, caller, file_id)
    return served_file(Path(record.path), record.content_type, record.name)


@router.get("/outputs/{prediction_id}/{name}")
async def download_output(
    request: Request,
    prediction_id: str,
    name: str,
    expires: Annotated[str | None, Query()] = None,
    signature: Annotated[str | None, Query()] = None,
) -> Response:
    """An output file of a prediction, by the signed URL given in its output."""
    caller = await link_or_principal(request, expires, signature)
    platform: Platform = request.app.state.platform
    if caller is not None:
        await guards.readable_prediction(platform, caller, prediction_id)
    path = platform.files.output_file(prediction_id, name)
    if path is None:
        raise ApiError(404, f"prediction {prediction_id} has no output file {name!r}")
    return served_file(path)
