"""Errors in Replicate's shape: `{"title", "detail", "status"}` with the matching status code.

Input validation errors keep Cog's list-shaped `detail` (`loc`/`msg`/`type` per field), which
is what Cog's own server answers and what tools written against it parse.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from ember.control.platform import Conflict, InvalidRequest, NotFound

TITLES = {
    400: "Bad request",
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
    ) -> None:
        super().__init__(str(detail))
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


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    return [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> Response:
        return error_response(exc.status, exc.detail, exc.title, exc.headers)

    @app.exception_handler(NotFound)
    async def _not_found(_: Request, exc: NotFound) -> Response:
        return error_response(404, str(exc))

    @app.exception_handler(Conflict)
    async def _conflict(_: Request, exc: Conflict) -> Response:
        return error_response(409, str(exc))

    @app.exception_handler(InvalidRequest)
    async def _invalid(_: Request, exc: InvalidRequest) -> Response:
        if exc.details:
            return error_response(422, exc.details, title=str(exc))
        return error_response(422, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _bad_body(_: Request, exc: RequestValidationError) -> Response:
        return error_response(422, _validation_details(exc), title="Invalid request body")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> Response:
        return error_response(exc.status_code, exc.detail, headers=getattr(exc, "headers", None))
