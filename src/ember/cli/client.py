"""A small client for Ember's HTTP API, for the commands that talk to a running `ember serve`.

The base URL comes from `--url` or `EMBER_URL` (default http://127.0.0.1:8000), the token from
`--token` or `EMBER_TOKEN`. A refused connection and the API's Replicate-shaped errors
(`{"title", "detail", "status"}`) become `CommandFailed` with a message that says what to do.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"


class CommandFailed(Exception):
    """A command cannot go on; `code` is the exit status (1: failed, 2: bad input or usage)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class ApiError(CommandFailed):
    """The API answered with an error status."""

    def __init__(self, status: int, message: str, detail: Any = None) -> None:
        super().__init__(message, 1)
        self.status = status
        self.detail = detail


def normalize_url(url: str) -> str:
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    return url


def error_message(response: httpx.Response) -> tuple[str, Any]:
    """A readable message for an error answer (Replicate's shape, or whatever came back)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and ("detail" in body or "title" in body):
        title, detail = body.get("title"), body.get("detail")
        if isinstance(detail, list):  # validation errors: loc/msg per field
            lines = [
                f"  {_field(item.get('loc', []))}: {item.get('msg')}"
                if isinstance(item, dict)
                else f"  {item}"
                for item in detail
            ]
            return f"{title or 'invalid request'}:\n" + "\n".join(lines), detail
        return str(detail or title), detail
    if isinstance(body, dict) and isinstance(body.get("error"), dict):  # OpenAI's shape
        return str(body["error"].get("message")), body["error"]
    text = response.text.strip()[:500] or response.reason_phrase
    return f"HTTP {response.status_code}: {text}", None


@contextmanager
def when_missing(message: str) -> Iterator[None]:
    """Turn the API's 404 into `message`, which names the command that lists what exists."""
    try:
        yield
    except ApiError as exc:
        if exc.status == 404:
            raise CommandFailed(message) from None
        raise


def _field(loc: list[Any]) -> str:
    """`["body", "input", "steps"]` → `steps`; `["body", "name"]` → `name`."""
    parts = list(loc)
    if "input" in parts:
        parts = parts[parts.index("input") + 1 :]
    elif parts[:1] == ["body"]:
        parts = parts[1:]
    return ".".join(str(p) for p in parts) or "input"


OPENAI_ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")


def _names_a_deployment(path: str) -> bool:
    """Whether a 404 for `path` means an unknown deployment or model (its name came from the
    command line, so `ember ls` is the next step)."""
    return path.startswith(("/v1/deployments/", "/v1/models/")) or path in OPENAI_ROUTES


@dataclass
class Client:
    url: str = DEFAULT_URL
    token: str | None = None

    def __post_init__(self) -> None:
        self.url = normalize_url(self.url)
        headers = {"User-Agent": "ember-cli"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        self.http = httpx.Client(
            base_url=self.url, headers=headers, timeout=httpx.Timeout(60, connect=5)
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- requests ---------------------------------------------------------------------------

    def request(self, method: str, path: str, ok: tuple[int, ...] = (), **kwargs: Any) -> Any:
        """Send a request; the decoded JSON (None when empty). Raises ApiError unless the
        status is 2xx or listed in `ok` (then the response itself is returned)."""
        with self._transport_errors():
            response = self.http.request(method, path, **kwargs)
        if response.status_code in ok:
            return response
        self.check(response)
        return response.json() if response.content else None

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.request("POST", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> Any:
        return self.request("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Any:
        return self.request("DELETE", path, **kwargs)

    def find(self, path: str) -> Any:
        """GET that answers None for a 404."""
        response = self.request("GET", path, ok=(404,))
        return None if isinstance(response, httpx.Response) else response

    def pages(self, path: str) -> Iterator[Any]:
        """Every result of a paginated list, following `next`."""
        page = self.get(path)
        while True:
            yield from page.get("results", [])
            if not page.get("next"):
                return
            page = self.get(page["next"])

    @contextmanager
    def events(self, method: str, path: str, **kwargs: Any) -> Iterator[Iterator[tuple[str, str]]]:
        """Server-sent events of a streaming request, as (event, data) pairs."""
        headers = {**kwargs.pop("headers", {}), "Accept": "text/event-stream"}
        timeout = httpx.Timeout(60, connect=5, read=None)
        with (
            self._transport_errors(),
            self.http.stream(method, path, headers=headers, timeout=timeout, **kwargs) as r,
        ):
            if r.status_code >= 400:
                r.read()
                self.check(r)
            yield self._sse(r)

    def download(self, url: str, target: Any) -> None:
        """Stream a file (an output URL) into the open binary file `target`."""
        with self._transport_errors(), self.http.stream("GET", url) as response:
            if response.status_code >= 400:
                response.read()
                self.check(response)
            for chunk in response.iter_bytes():
                target.write(chunk)

    # -- errors -----------------------------------------------------------------------------

    def check(self, response: httpx.Response) -> None:
        if response.status_code < 400:
            return
        message, detail = error_message(response)
        if response.status_code == 401 and not self.token:
            message += (
                "\nNo token given: set EMBER_TOKEN or pass --token; `ember serve` printed the "
                "admin token when it first started (an admin makes more with "
                "`ember token create`)."
            )
        elif response.status_code == 401:
            message += (
                "\nThe token was refused (mistyped, or revoked with `ember token rm`?): pass "
                "another with --token or EMBER_TOKEN; `ember serve` printed the admin token "
                "when it first started."
            )
        elif response.status_code == 403:
            message += "\nThis needs a token with more rights (e.g. --scope admin)."
        elif response.status_code == 404 and _names_a_deployment(response.request.url.path):
            message += "\n`ember ls` lists deployments and models."
        raise ApiError(response.status_code, message, detail)

    @contextmanager
    def _transport_errors(self) -> Iterator[None]:
        try:
            yield
        except httpx.ConnectError:
            raise CommandFailed(
                f"no Ember server at {self.url} — start one with `ember serve`, "
                "or point at yours with --url / EMBER_URL"
            ) from None
        except httpx.TimeoutException as exc:
            raise CommandFailed(
                f"{self.url} did not answer in time ({type(exc).__name__})"
            ) from None
        except httpx.RemoteProtocolError as exc:
            raise CommandFailed(f"the connection to {self.url} broke: {exc}") from None
        except httpx.TransportError as exc:
            raise CommandFailed(f"cannot reach {self.url}: {exc}") from None

    @staticmethod
    def _sse(response: httpx.Response) -> Iterator[tuple[str, str]]:
        """Parse an event stream. Lines end at "\\n" only, so a bare "\\r" inside a data line
        (progress bars in logs) stays part of the data."""
        event, data, buffer = "message", [], ""
        for text in response.iter_text():
            buffer += text
            *lines, buffer = buffer.split("\n")
            for raw in lines:
                line = raw.removesuffix("\r")
                if not line:
                    if data:
                        yield event, "\n".join(data)
                    event, data = "message", []
                    continue
                field, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if field == "event":
                    event = value
                elif field == "data":
                    data.append(value)
        if data:
            yield event, "\n".join(data)
