"""The web dashboard: files shipped inside the package and served by the gateway itself at `/`
(no separate server, no build step at run time).

It is a client of the public API like any other: each of its calls acts with the token the
user logged in with, so the dashboard can do nothing the API would not allow. The browser does
not keep that token: it holds a session cookie no script can read (`session.py`). The API's
reference page, `/docs`, is served from here too (`docs.py`).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.responses import FileResponse
from starlette.staticfiles import StaticFiles

from ember.api.dashboard import docs, session

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
    """Serve the dashboard at `/`, its files under `/ui/`, its login under
    `/v1/dashboard/session` (the app adds `session.DashboardSession`), and `/docs`."""
    app.state.dashboard_sessions = session.Sessions()
    app.include_router(session.router)
    docs.install(app)
    app.mount("/ui", StaticFiles(directory=STATIC), name="ui")

    @app.get("/", include_in_schema=False)
    async def dashboard() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers=SECURITY_HEADERS)
