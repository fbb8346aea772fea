"""The web dashboard: files shipped inside the package and served by the gateway itself at `/`
(no separate server, no build step at run time).

It is a client of the public API like any other: the browser keeps the token the user logs in
with and sends it as a bearer token, so the dashboard can do nothing the API would not allow.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.responses import FileResponse
from starlette.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"

# Scripts and styles only from Ember itself; output images may be signed links to another
# public URL of the same server, or data URIs.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob: http: https:; "
    "media-src 'self' data: blob: http: https:; style-src 'self' 'unsafe-inline'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def install(app: FastAPI) -> None:
    """Serve the dashboard at `/`, its files under `/ui/`."""
    app.mount("/ui", StaticFiles(directory=STATIC), name="ui")

    @app.get("/", include_in_schema=False)
    async def dashboard() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers=SECURITY_HEADERS)
