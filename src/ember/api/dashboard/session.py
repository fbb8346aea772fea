"""The dashboard's login: a session cookie in place of a token kept in the browser.

A token in `localStorage` can be read by any script that runs on Ember's origin, and taken
away for good. So the dashboard sends the token once, to `POST /v1/dashboard/session`, and
from then on the browser holds only
- an opaque random session id, in a cookie that is `HttpOnly` (no script reads it),
  `SameSite=Strict` (no other site's page makes the browser send it), `Path=/v1` (only API
  calls carry it) and `Secure` when the login came over https;
- the session's CSRF token, in the dashboard's memory (a reloaded page asks for it again
  with `GET /v1/dashboard/session`).
The token itself stays in this process's memory, by session id, and never goes into the
cookie (not even sealed: a sealed token would stay valid after logout): a copied cookie is
worth nothing after logout, expiry or a restart of the server (sessions end with it; one logs
in again).

The cookie alone authenticates nothing. `DashboardSession` (ASGI middleware, outside the body
limit) lets a request without an `Authorization` header act with its session's token only if
it sends the session's CSRF token in `X-CSRF-Token`, as the dashboard's own calls do. Another
site's page cannot: its requests go without the cookie (`SameSite`), and it cannot read the
answer that holds the CSRF token (the same-origin policy). For a request that has both, the
middleware adds the session's token as a bearer header, so all that follows (the body limit's
early token check, `auth.principal`, scopes, rate limits, and revocation, checked on every
request) is the bearer path unchanged.
An unsafe method that carries a live session's cookie without its CSRF token is refused with
403; a safe one goes on unauthenticated, so signed links (the output images the dashboard
shows) still work. A request with an `Authorization` header is not looked at here.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from ember.api.auth import UNAUTHENTICATED
from ember.api.errors import ApiError, error_response, is_openai_path, openai_response
from ember.api.responses import json_response
from ember.api.strict_json import StrictJSONRoute
from ember.control.platform import Platform

COOKIE = "ember_session"
COOKIE_PATH = "/v1"
CSRF_HEADER = "x-csrf-token"
SESSION_PATHS = "/v1/dashboard/"  # the routes below check the cookie themselves
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
REMEMBERED = 30 * 86400.0  # "Remember on this browser": a cookie that outlives the browser
UNREMEMBERED = 12 * 3600.0  # otherwise a browser-session cookie, and a working day at most
SESSION_LIMIT = 10_000  # open sessions kept; only a valid token opens one
CSRF_REFUSED = (
    "this request carries the dashboard's session cookie without the session's X-CSRF-Token "
    "header, so it may come from another page: refused (API clients send a bearer token)"
)


@dataclass(frozen=True)
class Session:
    token: str
    csrf: str
    ends: float  # on the store's clock

    def sent_by_dashboard(self, connection: HTTPConnection) -> bool:
        """Whether the request carries this session's CSRF token (compared in constant time)."""
        sent = connection.headers.get(CSRF_HEADER, "").encode("latin-1")
        return secrets.compare_digest(sent, self.csrf.encode())


class Sessions:
    """Open sessions by id, in memory. Bounded: past `limit` the oldest is forgotten, and only
    a holder of a valid token can open one, so anonymous traffic cannot churn it."""

    def __init__(
        self, limit: int = SESSION_LIMIT, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._open: OrderedDict[str, Session] = OrderedDict()
        self._limit = limit
        self._clock = clock

    def open(self, token: str, lifetime: float) -> tuple[str, Session]:
        session_id = secrets.token_urlsafe(32)
        session = Session(token, secrets.token_urlsafe(32), self._clock() + lifetime)
        self._open[session_id] = session
        while len(self._open) > self._limit:
            self._open.popitem(last=False)
        return session_id, session

    def find(self, session_id: str) -> Session | None:
        session = self._open.get(session_id)
        if session is not None and session.ends <= self._clock():
            del self._open[session_id]
            return None
        return session

    def close(self, session_id: str) -> None:
        self._open.pop(session_id, None)


def _sessions(connection: HTTPConnection) -> Sessions:
    return connection.app.state.dashboard_sessions


def _session_of(connection: HTTPConnection) -> Session | None:
    """The live session a `/v1` request's cookie names, unless the request has an
    `Authorization` header or is for the session routes (they check the cookie themselves)."""
    path: str = connection.scope["path"]
    if not path.startswith("/v1/") or path.startswith(SESSION_PATHS):
        return None
    if "authorization" in connection.headers:
        return None
    return _sessions(connection).find(connection.cookies.get(COOKIE, ""))


class DashboardSession:
    """ASGI middleware: a `/v1` request with a live session's cookie and its CSRF token acts
    with the session's token, as if sent as a bearer token (see the module docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            connection = HTTPConnection(scope)
            session = _session_of(connection)
            if session is not None and session.sent_by_dashboard(connection):
                bearer = (b"authorization", b"Bearer " + session.token.encode("latin-1"))
                scope = {**scope, "headers": [*scope["headers"], bearer]}
            elif session is not None and scope["method"] not in SAFE_METHODS:
                refuse = openai_response if is_openai_path(scope["path"]) else error_response
                await refuse(403, CSRF_REFUSED)(scope, receive, send)
                return
            # (a safe request without the CSRF token goes on unauthenticated: signed links)
        await self.app(scope, receive, send)


router = APIRouter(prefix="/v1/dashboard", route_class=StrictJSONRoute, include_in_schema=False)


class Login(BaseModel):
    model_config = ConfigDict(strict=True)

    token: str = Field(min_length=1, max_length=4096)
    remember: bool = False


@router.post("/session", status_code=201)
async def log_in(request: Request, body: Login) -> Response:
    """Check the token as a bearer token is checked, then open a session for it.

    Only `application/json` is taken: another site's page can send a form or a typeless body
    without asking, but not JSON, so it cannot log the browser into an account of its own."""
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != "application/json":
        raise ApiError(415, "send the token as JSON", title="Unsupported media type")
    platform: Platform = request.app.state.platform
    token = body.token.strip()
    found = await platform.tokens.authenticate(token) if token.isascii() else None
    if found is None:
        raise ApiError(401, UNAUTHENTICATED)
    platform.tokens.count_request(found)  # RateLimited (429) past its limit
    lifetime = REMEMBERED if body.remember else UNREMEMBERED
    session_id, session = _sessions(request).open(token, lifetime)
    response = json_response({"csrf_token": session.csrf}, status=201)
    response.set_cookie(
        COOKIE,
        session_id,
        max_age=int(lifetime) if body.remember else None,
        path=COOKIE_PATH,
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    return response


@router.get("/session")
async def current_session(request: Request) -> Response:
    """The session's CSRF token, for a reloaded dashboard page (it keeps it in memory only),
    while the session is open and its token still valid; else 401, and the cookie is cleared."""
    platform: Platform = request.app.state.platform
    sessions = _sessions(request)
    session_id = request.cookies.get(COOKIE, "")
    session = sessions.find(session_id)
    found = await platform.tokens.authenticate(session.token) if session else None
    if session is None or found is None:
        sessions.close(session_id)
        response = error_response(401, UNAUTHENTICATED)
        response.delete_cookie(COOKIE, path=COOKIE_PATH)
        return response
    platform.tokens.count_request(found)
    return json_response({"csrf_token": session.csrf})


@router.delete("/session", status_code=204)
async def log_out(request: Request) -> Response:
    """End the session (with its CSRF token, like any unsafe call) and clear the cookie."""
    sessions = _sessions(request)
    session_id = request.cookies.get(COOKIE, "")
    session = sessions.find(session_id)
    if session is not None:
        if not session.sent_by_dashboard(request):
            raise ApiError(403, CSRF_REFUSED)
        sessions.close(session_id)
    response = Response(status_code=204)
    response.delete_cookie(COOKIE, path=COOKIE_PATH)
    return response
