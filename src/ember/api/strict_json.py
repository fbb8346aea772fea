"""JSON bodies read strictly: what JSON (RFC 8259) allows, and nothing Python's parser adds.

Python's `json` accepts `NaN`, `Infinity` and lone UTF-16 surrogates (`"\\ud800"`), none of
which is JSON. Let in, a lone surrogate is stored and then fails every later encoding (the
database's, the worker's frame), and a non-finite number turns into `null` on its way out.
Refused here, at the gateway, they answer 422 like any malformed body (FastAPI turns the
`JSONDecodeError` into its validation error) and never reach a queue. Every router uses
`StrictJSONRoute` (FastAPI's documented way to change how a route reads its request).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

# A \uD800-\uDFFF escape: only then can a decoded string hold a lone surrogate.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number: send a finite number, or null")


def strict_loads(body: bytes | str) -> Any:
    """Parse JSON, refusing non-finite numbers and lone surrogates (JSONDecodeError)."""
    raw = body.encode() if isinstance(body, str) else body
    try:
        value = json.loads(raw, parse_constant=_refuse_constant)
    except ValueError as exc:
        if isinstance(exc, json.JSONDecodeError):
            raise
        raise json.JSONDecodeError(str(exc), _text(body), 0) from None
    if _SURROGATE_ESCAPE.search(raw):
        _check_strings(value, body)
    return value


def _text(body: bytes | str) -> str:
    """The body as the error's `doc` (decoded only when there is an error to report)."""
    return body if isinstance(body, str) else body.decode("utf-8", errors="surrogateescape")


def _check_strings(value: Any, body: bytes | str) -> None:
    """A paired surrogate decodes to one character; a lone one cannot be encoded as UTF-8."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise json.JSONDecodeError(
                    "a string holds a lone UTF-16 surrogate (\\ud800-\\udfff without its pair), "
                    "which is not text: send valid Unicode",
                    _text(body),
                    0,
                ) from None
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)


class StrictJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = strict_loads(await self.body())
        return self._json


class StrictJSONRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(StrictJSONRequest(request.scope, request.receive))

        return strict
