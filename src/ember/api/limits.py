"""Request size limits, enforced while the body arrives (ASGI middleware).

A body larger than its limit is refused with 413 before it is read whole: at once when its
Content-Length says so, else as soon as the bytes received pass the limit (chunked uploads).
Two limits, both configurable: uploads (`POST /v1/files`, a model version's package) may be
large; every other body is JSON, where a huge one is a mistake or an attack (a data URI of a
video belongs in `/v1/files`).
"""

from __future__ import annotations

import os
import re

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ember.api.errors import error_response, is_openai_path, openai_response

MAX_REQUEST_BYTES = 100 * 2**20  # EMBER_MAX_REQUEST_BYTES
MAX_UPLOAD_BYTES = 20 * 2**30  # EMBER_MAX_UPLOAD_BYTES
_UPLOADS = re.compile(r"^/v1/(files|models/[^/]+/[^/]+/versions)/?$")


class BodyLimit:
    def __init__(
        self,
        app: ASGIApp,
        max_request: int | None = None,
        max_upload: int | None = None,
    ) -> None:
        self.app = app
        self.max_request = max_request or int(
            os.environ.get("EMBER_MAX_REQUEST_BYTES", MAX_REQUEST_BYTES)
        )
        self.max_upload = max_upload or int(
            os.environ.get("EMBER_MAX_UPLOAD_BYTES", MAX_UPLOAD_BYTES)
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        upload = bool(_UPLOADS.match(scope["path"]))
        limit = self.max_upload if upload else self.max_request
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _refuse(scope, send, _message(limit, upload))
            return
        received = 0

        async def counting() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # Raised inside the app's body read: its error handlers answer 413.
                    raise HTTPException(413, _message(limit, upload))
            return message

        await self.app(scope, counting, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _message(limit: int, upload: bool) -> str:
    size = f"{limit / 2**20:g} MiB" if limit < 2**30 else f"{limit / 2**30:g} GiB"
    if upload:
        return f"the upload is larger than {size} (EMBER_MAX_UPLOAD_BYTES on the server)"
    return (
        f"the request body is larger than {size}: upload big files with POST /v1/files and "
        "pass their URLs (EMBER_MAX_REQUEST_BYTES on the server raises the limit)"
    )


async def _refuse(scope: Scope, send: Send, detail: str) -> None:
    """413 in the route's error shape, without reading the body."""
    response = (
        openai_response(413, detail)
        if is_openai_path(scope["path"])
        else error_response(413, detail)
    )
    await response(scope, _no_body, send)


async def _no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}
