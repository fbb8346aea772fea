"""Attacks on the dashboard's origin (issue 18), against a real `ember serve`: its login kept a
token where any same-origin page could read it (`localStorage`), and `/docs` ran Swagger UI
from a CDN without a Content-Security-Policy. (What the browser itself keeps after a login:
`tests/browser/test_dashboard.py`.)"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import ExitStack

import httpx
import pytest

from tests.support.server import TOKEN, EmberServer, running

pytestmark = pytest.mark.timeout(120)

SESSION = "/v1/dashboard/session"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmberServer]:
    with running(tmp_path_factory.mktemp("ember-attacks-dashboard")) as instance:
        yield instance


class Browser:
    """What a browser holds after logging in to the dashboard: the session cookie (sent by
    httpx like a browser, `Path=/v1`) and, in the page's memory, the CSRF token."""

    def __init__(self, http: httpx.Client, token: str) -> None:
        self.http = http
        self.login = http.post(SESSION, json={"token": token})
        assert self.login.status_code == 201, self.login.text
        self.csrf = {"X-CSRF-Token": self.login.json()["csrf_token"]}


@pytest.fixture
def log_in(server: EmberServer) -> Iterator[Callable[..., Browser]]:
    """Log a new browser in (with the admin token unless told)."""
    with ExitStack() as clients:

        def browser(token: str = TOKEN) -> Browser:
            return Browser(clients.enter_context(httpx.Client(base_url=server.url)), token)

        yield browser


def test_the_session_cookie_is_httponly_strict_scoped_and_holds_no_token(
    server: EmberServer, log_in: Callable[..., Browser]
) -> None:
    """The token used to sit in `localStorage`, readable by any script of the origin."""
    login = log_in().login
    cookie = login.headers["set-cookie"]
    attributes = {part.strip().lower() for part in cookie.split(";")}
    assert {"httponly", "samesite=strict", "path=/v1"} <= attributes
    assert "secure" not in attributes  # this server is plain http
    assert not any(a.startswith(("max-age", "expires")) for a in attributes)  # not remembered
    assert TOKEN not in cookie and TOKEN not in login.text
    remembered = httpx.post(f"{server.url}{SESSION}", json={"token": TOKEN, "remember": True})
    assert "max-age=2592000" in remembered.headers["set-cookie"].lower()


def test_the_cookie_without_the_csrf_token_acts_for_no_one(
    log_in: Callable[..., Browser], api: httpx.Client
) -> None:
    """A page of another site (or any page that is not the dashboard) gets the browser to send
    the cookie, but cannot send the session's CSRF token: its POST is refused, its GET is not
    authenticated; the dashboard's own calls work."""
    browser = log_in()
    forged = browser.http.post("/v1/tokens", json={"name": "forged", "scope": "admin"})
    assert forged.status_code == 403, forged.text
    assert "X-CSRF-Token" in forged.json()["detail"]
    wrong = browser.http.post(
        "/v1/tokens", json={"name": "forged"}, headers={"X-CSRF-Token": "guess"}
    )
    assert wrong.status_code == 403
    assert browser.http.get("/v1/account").status_code == 401
    assert "forged" not in api.get("/v1/tokens").text

    assert browser.http.get("/v1/account", headers=browser.csrf).json()["scope"] == "admin"
    made = browser.http.post("/v1/tokens", json={"name": "by-dashboard"}, headers=browser.csrf)
    assert made.status_code == 201, made.text
    # OpenAI's routes refuse in OpenAI's shape.
    chat = browser.http.post("/v1/chat/completions", json={"model": "x", "messages": []})
    assert chat.status_code == 403 and "X-CSRF-Token" in chat.json()["error"]["message"]


def test_a_bearer_request_is_not_affected_by_a_cookie(log_in: Callable[..., Browser]) -> None:
    browser = log_in()
    browser.http.headers["Authorization"] = f"Bearer {TOKEN}"
    made = browser.http.post("/v1/tokens", json={"name": "bearer-with-cookie"})
    assert made.status_code == 201, made.text


def test_a_large_upload_from_the_dashboard_passes_the_body_limits_token_check(
    log_in: Callable[..., Browser],
) -> None:
    """Bodies over 64 KiB need a valid token before they are read: a session's counts."""
    browser = log_in()
    content = {"content": ("big.bin", b"\0" * 200_000, "application/octet-stream")}
    upload = browser.http.post("/v1/files", files=content, headers=browser.csrf)
    assert upload.status_code == 201, upload.text
    assert browser.http.post("/v1/files", files=content).status_code == 403


def test_revoking_the_token_ends_its_sessions(
    log_in: Callable[..., Browser], api: httpx.Client
) -> None:
    made = api.post("/v1/tokens", json={"name": "soon-revoked", "scope": "predict"}).json()
    browser = log_in(made["token"])
    assert browser.http.get("/v1/account", headers=browser.csrf).status_code == 200
    assert api.delete(f"/v1/tokens/{made['id']}").status_code == 204
    assert browser.http.get("/v1/account", headers=browser.csrf).status_code == 401
    assert browser.http.get(SESSION).status_code == 401


def test_logging_out_ends_the_session_for_a_copied_cookie_too(
    log_in: Callable[..., Browser],
) -> None:
    browser = log_in()
    copied = log_in()
    copied.http.cookies = browser.http.cookies
    assert browser.http.delete(SESSION).status_code == 403  # a forged logout: no CSRF token
    assert browser.http.delete(SESSION, headers=browser.csrf).status_code == 204
    assert browser.http.cookies.get("ember_session") is None  # cleared
    assert copied.http.get("/v1/account", headers=browser.csrf).status_code == 401
    assert copied.http.get(SESSION).status_code == 401


def test_a_login_is_json_with_a_valid_token(server: EmberServer) -> None:
    """Another site's form (or typeless body) cannot log the browser into its own account."""
    url = f"{server.url}{SESSION}"
    body = b'{"token": "' + TOKEN.encode() + b'"}'
    for content_type in (None, "text/plain", "application/x-www-form-urlencoded"):
        headers = {"Content-Type": content_type} if content_type else {}
        answer = httpx.post(url, content=body, headers=headers)
        assert answer.status_code in (415, 422), (content_type, answer.text)
        assert "set-cookie" not in answer.headers
    wrong = httpx.post(url, json={"token": "r8_not-a-token"})
    assert wrong.status_code == 401 and "set-cookie" not in wrong.headers


ASSET = re.compile(r'(?:src|href)="([^"]+)"')


def test_the_api_docs_load_nothing_from_elsewhere_and_carry_a_strict_csp(
    server: EmberServer,
) -> None:
    """`/docs` loaded Swagger UI from a CDN, started by an inline script, with no CSP."""
    page = httpx.get(f"{server.url}/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = {
        directive.split()[0]: directive.split()[1:]
        for directive in page.headers["content-security-policy"].split(";")
    }
    assert policy["script-src"] == ["'self'"] and policy["default-src"] == ["'none'"]
    assert policy["connect-src"] == ["'self'"] and policy["frame-ancestors"] == ["'none'"]
    assert not re.search(r"https?:|//", page.text)  # no other origin, not even scheme-relative
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page.text)  # no inline script
    assets = [url for url in ASSET.findall(page.text) if not url.startswith("data:")]
    assert any(url.endswith("swagger-ui-bundle.js") for url in assets)
    for url in assets:
        asset = httpx.get(f"{server.url}{url}")
        assert asset.status_code == 200, url
        kinds = ("text/css", "text/javascript", "application/javascript")
        assert asset.headers["content-type"].startswith(kinds), url
    assert httpx.get(f"{server.url}/redoc").status_code == 404  # it came from a CDN too
