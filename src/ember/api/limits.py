"""Request size limits, enforced while the body arrives (ASGI middleware).

A body larger than its limit is refused with 413 before it is read whole: at once when its
Content-Length says so, else as soon as the bytes received pass the limit (chunked uploads).
Two limits, both configurable: uploads (`POST /v1/files`, a model version's package) may be
large; every other body is JSON, where a huge one is a mistake or an attack (a data URI of a
video belongs in `/v1/files`). A body over 64 KiB must come with a valid token, checked before
it is read: FastAPI reads (and spools) a body before the route's authentication runs, so
without this anyone could fill the disk with uploads that end in a 401.

A body must also arrive in time, else 408 and the connection is closed: uvicorn waits for
a body as long as its client trickles it, so a few slow clients could hold the server's
connections and tasks indefinitely. Within EMBER_BODY_TIMEOUT seconds of the request's start
(its headers read) the body must be whole, unless the request carries a valid token
(checked only then): a known caller's upload may take longer, as long as no gap between
its chunks exceeds EMBER_BODY_TIMEOUT.
"""

from __future__ import annotations

import asyncio
import os
import re

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ember.api.auth import UNAUTHENTICATED
from ember.api.errors import error_response, is_openai_path, openai_response

MAX_REQUEST_BYTES = 100 * 2**20  # EMBER_MAX_REQUEST_BYTES
MAX_UPLOAD_BYTES = 20 * 2**30  # EMBER_MAX_UPLOAD_BYTES
ANONYMOUS_BYTES = 64 * 1024  # more than this needs a valid token first
BODY_TIMEOUT = 30.0  # EMBER_BODY_TIMEOUT, seconds
_UPLOADS = re.compile(r"^/v1/(files|models/[^/]+/[^/]+/versions)/?$")


class BodyLimit:
    def __init__(
        self,
        app: ASGIApp,
        max_request: int | None = None,
        max_upload: int | None = None,
        body_timeout: float | None = None,
    ) -> None:
        self.app = app
        self.max_request = max_request or int(
            os.environ.get("EMBER_MAX_REQUEST_BYTES", MAX_REQUEST_BYTES)
        )
        self.max_upload = max_upload or int(
            os.environ.get("EMBER_MAX_UPLOAD_BYTES", MAX_UPLOAD_BYTES)
        )
        self.body_timeout = body_timeout or float(
            os.environ.get("EMBER_BODY_TIMEOUT", BODY_TIMEOUT)
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        upload = bool(_UPLOADS.match(scope["path"]))
        limit = self.max_upload if upload else self.max_request
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _refuse(scope, send, 413, _message(limit, upload))
            return
        if declared is not None and declared > ANONYMOUS_BYTES and not await _authenticated(scope):
            await _refuse(scope, send, 401, UNAUTHENTICATED, {"WWW-Authenticate": "Bearer"})
            return
        received = 0
        vouched = declared is not None  # a declared length was checked above
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.body_timeout
        known = False  # whether the caller is known, and then only gaps count (see above)
        whole = declared == 0 or (declared is None and not _chunked(scope))  # nothing to wait for

        async def timed() -> Message:
            """The next message, or 408 once the body is late (see the module's docstring)."""
            nonlocal deadline, known, whole
            while not whole:
                try:
                    async with asyncio.timeout_at(deadline):
                        message = await receive()
                except TimeoutError:
                    if known or not await _authenticated(scope):
                        raise HTTPException(
                            408,
                            f"the request body did not arrive within {self.body_timeout:g} s "
                            "(EMBER_BODY_TIMEOUT on the server)",
                            headers={"Connection": "close"},
                        ) from None
                    known = True
                    deadline = loop.time() + self.body_timeout
                    continue
                whole = message["type"] != "http.request" or not message.get("more_body")
                if known:
                    deadline = loop.time() + self.body_timeout
                return message
            return await receive()  # past the body: the disconnect, whenever it comes

        async def counting() -> Message:
            nonlocal received, vouched
            message = await timed()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # Raised inside the app's body read: its error handlers answer 413.
                    raise HTTPException(413, _message(limit, upload))
                if received > ANONYMOUS_BYTES and not vouched:
                    if not await _authenticated(scope):
                        raise HTTPException(
                            401, UNAUTHENTICATED, headers={"WWW-Authenticate": "Bearer"}
                        )
                    vouched = True
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


def _chunked(scope: Scope) -> bool:
    """Whether a body without a Content-Length comes (chunked); else there is none."""
    return any(name == b"transfer-encoding" for name, _ in scope["headers"])


def _message(limit: int, upload: bool) -> str:
    size = f"{limit / 2**20:g} MiB" if limit < 2**30 else f"{limit / 2**30:g} GiB"
    if upload:
        return f"the upload is larger than {size} (EMBER_MAX_UPLOAD_BYTES on the server)"
    return (
        f"the request body is larger than {size}: upload big files with POST /v1/files and "
        "pass their URLs (EMBER_MAX_REQUEST_BYTES on the server raises the limit)"
    )


async def _authenticated(scope: Scope) -> bool:
    """Whether the request carries a token Ember knows (a cached lookup, as the route's)."""
    header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
    scheme, _, token = header.partition(" ")
    if scheme.lower() not in ("bearer", "token") or not token.strip():
        return False
    return await scope["app"].state.platform.tokens.authenticate(token.strip()) is not None


async def _refuse(
    scope: Scope, send: Send, status: int, detail: str, headers: dict[str, str] | None = None
) -> None:
    """An error in the route's shape, without reading the body."""
    response = (
        openai_response(status, detail, headers=headers)
        if is_openai_path(scope["path"])
        else error_response(status, detail, headers=headers)
    )
    await response(scope, _no_body, send)


async def _no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}
