"""The API reference page, `/docs`: Swagger UI from the package, under a strict CSP.

FastAPI's own `/docs` loads Swagger UI from a CDN and starts it with an inline script, with
no Content-Security-Policy, on the dashboard's origin: whoever serves (or takes over) those
files runs script as the dashboard. Here Swagger UI's files come from the
`fastapi-standalone-docs` package (Swagger UI's dist, Apache-2.0, its LICENSE beside them),
the page starts it from a file of ours (`static/docs.js`), and the CSP lets scripts, styles
and requests come from Ember only (the page never asks swagger.io's validator either).
FastAPI's `/redoc`, also from a CDN, is not served.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_standalone_docs
from fastapi import FastAPI
from starlette.responses import FileResponse
from starlette.staticfiles import StaticFiles

PAGE = Path(__file__).parent / "static" / "docs.html"
SWAGGER_UI = Path(fastapi_standalone_docs.__file__).parent / "static" / "swagger"
SWAGGER_UI_URL = "/docs/swagger-ui"

HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; font-src 'self'; connect-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def install(app: FastAPI) -> None:
    """Serve `/docs` and Swagger UI's files under `/docs/swagger-ui/`."""
    app.mount(SWAGGER_UI_URL, StaticFiles(directory=SWAGGER_UI), name="swagger-ui")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> FileResponse:
        return FileResponse(PAGE, headers=HEADERS)
