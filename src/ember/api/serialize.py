"""Ember's records as Replicate's JSON objects.

Output files become signed URLs to Ember (https when Ember's public URL is https), or data
URIs when the response is a `Prefer: wait` answer that finished in time or the client asked
with `Prefer: files=data-uri` — the official clients turn both into file objects.
"""

from __future__ import annotations

import base64
import datetime
import mimetypes
from pathlib import Path
from typing import Any

from ember.control import records
from ember.control.platform import Platform
from ember.control.predictions import PredictionState
from ember.runtime.base import replace_files

DATA_URI_LIMIT = 20 * 1024 * 1024  # larger files always go by URL


def timestamp(value: datetime.datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.UTC)
    return value.astimezone(datetime.UTC).isoformat().replace("+00:00", "Z")


def data_uri(path: Path) -> str:
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"


def files_in(platform: Platform, state: PredictionState, value: Any, inline: bool) -> Any:
    """Replace the worker's file markers with URLs or data URIs."""
    files_dir = platform.files.output_dir(state)

    def convert(path: Path) -> str:
        if inline and path.is_file() and path.stat().st_size <= DATA_URI_LIMIT:
            return data_uri(path)
        return platform.files.output_url(state.id, path.name)

    return replace_files(value, convert, files_dir)


def prediction(platform: Platform, state: PredictionState, inline_files: bool = False) -> dict:
    base = f"{platform.public_url}/v1/predictions/{state.id}"
    body = {
        "id": state.id,
        "model": state.model,
        "version": state.version_id,
        "input": state.public_input,
        "output": files_in(platform, state, state.output, inline_files),
        "logs": state.logs,
        "error": state.error,
        "status": state.status,
        "created_at": timestamp(state.created_at),
        "started_at": timestamp(state.started_at),
        "completed_at": timestamp(state.completed_at),
        "data_removed": False,
        "source": state.source,
        "metrics": state.metrics,
        "urls": {
            "get": base,
            "cancel": f"{base}/cancel",
            "stream": platform.files.stream_url(state.id),
        },
    }
    if state.deployment:
        body["deployment"] = state.deployment
    if state.webhook:
        body["webhook"] = state.webhook
        body["webhook_events_filter"] = state.webhook_events_filter
    return body


def version(record: records.Version) -> dict:
    return {
        "id": record.id,
        "created_at": timestamp(record.created_at),
        "cog_version": record.cog_version,
        "openapi_schema": record.openapi_schema,
    }


def model(platform: Platform, record: records.Model, latest: records.Version | None) -> dict:
    return {
        "url": f"{platform.public_url}/{record.owner}/{record.name}",
        "owner": record.owner,
        "name": record.name,
        "description": record.description,
        "visibility": record.visibility,
        "github_url": None,
        "paper_url": None,
        "license_url": None,
        "run_count": 0,
        "cover_image_url": None,
        "default_example": None,
        "hardware": record.hardware,
        "latest_version": version(latest) if latest else None,
    }


def account(owner: str) -> dict:
    return {"type": "organization", "username": owner, "name": owner, "github_url": None}


def deployment(
    record: records.Deployment, release: records.Release, model_ref: str, status: dict
) -> dict:
    return {
        "status": status,
        "owner": record.owner,
        "name": record.name,
        "current_release": {
            "number": release.number,
            "model": model_ref,
            "version": release.version_id,
            "created_at": timestamp(release.created_at),
            "created_by": account(release.created_by),
            "configuration": {
                "hardware": release.hardware,
                "min_instances": release.min_instances,
                "max_instances": release.max_instances,
                **(release.scaling or {}),
            },
        },
    }


def file(platform: Platform, record: records.File) -> dict:
    return {
        "id": record.id,
        "name": record.name,
        "content_type": record.content_type,
        "size": record.size,
        "etag": record.sha256,
        "checksums": {"sha256": record.sha256},
        "metadata": record.file_metadata,
        "created_at": timestamp(record.created_at),
        "expires_at": timestamp(record.expires_at),
        "urls": {"get": f"{platform.public_url}/v1/files/{record.id}"},
    }


def page(results: list[Any], next_url: str | None = None) -> dict:
    return {"previous": None, "next": next_url, "results": results}
