"""Errors in Replicate's shape: `{"title", "detail", "status"}` with the matching status code.

Input validation errors keep Cog's list-shaped `detail` (`loc`/`msg`/`type` per field), which
is what Cog's own server answers and what tools written against it parse.

The control plane's refusals (`control/errors.py`) get their status here, in `STATUSES`,
and nowhere else.

On OpenAI's routes the same errors come in OpenAI's shape, `{"error": {"message", "type",
"param", "code"}}`, and a body that fails validation is a 400 (OpenAI's status), not a 422:
the `openai` client raises its typed exceptions (BadRequestError, NotFoundError...) from them.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Match

from ember.control.errors import (
    BadRequest,
    BudgetExceeded,
    Conflict,
    EmberError,
    Forbidden,
    InvalidRequest,
    NotFound,
    QueueFull,
    RateLimited,
)

TITLES = {
    400: "Bad request",
    402: "Budget exceeded",
    401: "Unauthenticated",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Request too large",
    422: "Unprocessable entity",
    429: "Too many requests",
    500: "Internal server error",
}


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        detail: Any,
        title: str | None = None,
        headers: dict[str, str] | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(str(detail))
        self.param = param  # the request field at fault, for OpenAI's error shape
        self.status = status
        self.detail = detail
        self.title = title or TITLES.get(status, "Error")
        self.headers = headers or {}


def error_response(
    status: int, detail: Any, title: str | None = None, headers: dict[str, str] | None = None
) -> Response:
    body = {"title": title or TITLES.get(status, "Error"), "detail": detail, "status": status}
    return Response(
        orjson.dumps(body), status_code=status, media_type="application/json", headers=headers
    )


OPENAI_PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    402: "insufficient_quota",
    404: "invalid_request_error",
    429: "requests",
}
OPENAI_CODES = {
    401: "invalid_api_key",
    402: "insufficient_quota",
    404: "model_not_found",
    429: "rate_limit_exceeded",
}


def is_openai(request: Request) -> bool:
    return is_openai_path(request.url.path)


def is_openai_path(path: str) -> bool:
    return (
        path in OPENAI_PATHS
        or (path.startswith("/v1/models/") and path.count("/") == 3)
        or path == "/v1/responses"
        or path.startswith("/v1/responses/")
    )


def openai_response(
    status: int, message: str, param: str | None = None, headers: dict[str, str] | None = None
) -> Response:
    body = {
        "error": {
            "message": message,
            "type": OPENAI_TYPES.get(
                status, "server_error" if status >= 500 else "invalid_request_error"
            ),
            "param": param,
            "code": OPENAI_CODES.get(status),
        }
    }
    return Response(
        orjson.dumps(body), status_code=status, media_type="application/json", headers=headers
    )


def _message(error: dict[str, Any]) -> str:
    """A validation error's message, with the parser's reason where the body is not JSON
    (FastAPI's own says only "JSON decode error")."""
    message = error.get("msg", "invalid request body")
    reason = (error.get("ctx") or {}).get("error")
    if error.get("type") == "json_invalid" and reason:
        return f"{message}: {reason}"
    return message


def _openai_validation(exc: RequestValidationError) -> Response:
    """OpenAI names the top-level field (`param`); the message says where inside it."""
    first = exc.errors()[0] if exc.errors() else {}
    location = list(first.get("loc", ()))[1:]  # after "body"
    message = _message(first)
    if not location or not isinstance(location[0], str):  # not a field: unreadable JSON
        return openai_response(400, f"the request body is not valid JSON: {message}")
    return openai_response(400, f"{'.'.join(map(str, location))}: {message}", location[0])


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    return [
        {"loc": list(e.get("loc", ())), "msg": _message(e), "type": e.get("type", "")}
        for e in exc.errors()
    ]


# Each kind of refusal's status; a kind not listed takes its nearest listed parent's.
STATUSES: dict[type[EmberError], int] = {
    BadRequest: 400,
    BudgetExceeded: 402,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    InvalidRequest: 422,
    QueueFull: 429,
    RateLimited: 429,
}


def status_of(error: EmberError) -> int:
    for kind in type(error).__mro__:
        if kind in STATUSES:
            return STATUSES[kind]
    return 400


HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "QUERY")  # QUERY: search


def allowed_methods(request: Request) -> str:
    """The methods some route answers at the request's path, for a 405's `Allow` header
    (Starlette's names only those of the first route whose path matches)."""
    routes = request.app.router.routes
    return ", ".join(
        method
        for method in HTTP_METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes
        )
    )


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Response:
        if is_openai(request):
            return openai_response(exc.status, str(exc.detail), exc.param, exc.headers)
        return error_response(exc.status, exc.detail, exc.title, exc.headers)

    @app.exception_handler(EmberError)
    async def _refused(request: Request, exc: EmberError) -> Response:
        status = status_of(exc)
        headers = {}
        if isinstance(exc, QueueFull | RateLimited):
            headers["Retry-After"] = str(exc.retry_after)
        if is_openai(request):
            param = "model" if isinstance(exc, NotFound | InvalidRequest) else None
            openai_status = 400 if isinstance(exc, InvalidRequest) else status
            return openai_response(openai_status, str(exc), param, headers)
        if isinstance(exc, InvalidRequest) and exc.details:
            return error_response(status, exc.details, title=str(exc))
        return error_response(status, str(exc), headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _bad_body(request: Request, exc: RequestValidationError) -> Response:
        if is_openai(request):
            return _openai_validation(exc)
        return error_response(422, _validation_details(exc), title="Invalid request body")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        # Logged by Starlette's error middleware, which re-raises after answering.
        message = "Ember failed to handle the request; the server log says why"
        if is_openai(request):
            return openai_response(500, message)
        return error_response(500, message)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:
            headers = {**(headers or {}), "Allow": allowed_methods(request)}
        if is_openai(request):
            return openai_response(exc.status_code, str(exc.detail), headers=headers)
        return error_response(exc.status_code, exc.detail, headers=headers)
