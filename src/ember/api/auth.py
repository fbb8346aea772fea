"""Bearer tokens: every /v1 request names a token; its owner is who the request acts for.

The token's rate limit is counted here too, before any work is done for the request."""

from __future__ import annotations

from fastapi import Request

from ember.api.errors import ApiError
from ember.control.access import Principal
from ember.control.platform import Platform

UNAUTHENTICATED = "You did not pass a valid authentication token"


async def principal(request: Request) -> Principal:
    """FastAPI dependency: the caller, or 401 in Replicate's words, or 429 past its limit."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() not in ("bearer", "token") or not token.strip():
        raise ApiError(401, UNAUTHENTICATED, headers={"WWW-Authenticate": "Bearer"})
    platform: Platform = request.app.state.platform
    found = await platform.tokens.authenticate(token.strip())
    if found is None:
        raise ApiError(401, UNAUTHENTICATED, headers={"WWW-Authenticate": "Bearer"})
    platform.tokens.count_request(found)  # RateLimited (429) past its limit
    return found


async def link_or_principal(
    request: Request, expires: str | None, signature: str | None
) -> Principal | None:
    """None for a valid signed link to this very path (the link is the permission: output
    files, replicas fetching inputs, a prediction's stream URL); else the token's caller, who
    must then be allowed to read what the path names (401 without a token)."""
    platform: Platform = request.app.state.platform
    if platform.files.signer.verify(request.url.path, expires, signature):
        return None
    return await principal(request)
