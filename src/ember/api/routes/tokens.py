"""API tokens (an Ember extension): an admin makes, lists and revokes tokens for people and
automation. Only hashes are kept, so a listing never shows a token itself."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.responses import Response

from ember.api import guards, serialize
from ember.api.auth import principal
from ember.api.errors import ApiError
from ember.api.responses import json_response
from ember.api.strict_json import StrictJSONRoute
from ember.control.access import Principal
from ember.control.platform import Platform
from ember.control.policies.ratelimit import RateLimit

router = APIRouter(prefix="/v1", route_class=StrictJSONRoute)
Caller = Annotated[Principal, Depends(principal)]


class TokenCreate(BaseModel):
    model_config = ConfigDict(strict=True)  # `false` is not 0, nor "5" a number

    name: str = Field(min_length=1, max_length=200)
    owner: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9][a-z0-9._-]{0,99}$",
        description="the account it acts for (lowercase); defaults to the caller's",
    )
    scope: Literal["admin", "deploy", "predict"] = Field(
        default="predict",  # the least: wider scopes are asked for
        description="predict: run and read; deploy: also change models and deployments; "
        "admin: everything, every account",
    )
    rate_limit: str | None = Field(
        default=None,
        max_length=30,
        description="e.g. 600/min, 10/s, 5000/h (default: the server's EMBER_RATE_LIMIT for "
        "non-admin tokens, else none)",
    )

    @field_validator("rate_limit")
    @classmethod
    def _valid_rate(cls, value: str | None) -> str | None:
        return None if value is None else str(RateLimit.parse(value))


@router.post("/tokens", status_code=201)
async def create_token(request: Request, body: TokenCreate, caller: Caller) -> Response:
    """Make a token; it is shown in this answer only (Ember keeps just its hash)."""
    guards.admin(caller, "create tokens")
    platform: Platform = request.app.state.platform
    owner = body.owner or caller.owner
    token_id, token = await platform.tokens.create(body.name, owner, body.scope, body.rate_limit)
    return json_response(
        {
            "id": token_id,
            "token": token,
            "name": body.name,
            "owner": owner,
            "scope": body.scope,
            "rate_limit": body.rate_limit,
        },
        201,
    )


@router.get("/tokens")
async def list_tokens(request: Request, caller: Caller) -> Response:
    """Tokens by id, name, owner and scope, oldest first (the secrets are not kept)."""
    guards.admin(caller, "list tokens")
    platform: Platform = request.app.state.platform
    items = [
        {
            "id": record.id,
            "name": record.name,
            "owner": record.owner,
            "scope": record.scope,
            "rate_limit": record.rate_limit,
            "created_at": serialize.timestamp(record.created_at),
        }
        for record in await platform.tokens.all()
    ]
    return json_response(serialize.page(items))


@router.delete("/tokens/{token_id}", status_code=204)
async def revoke_token(request: Request, token_id: str, caller: Caller) -> Response:
    """Revoke a token at once: requests that present it are refused with 401 from now on."""
    guards.admin(caller, "revoke tokens")
    platform: Platform = request.app.state.platform
    if not await platform.tokens.revoke(token_id):
        raise ApiError(404, f"no token {token_id!r}: `GET /v1/tokens` lists them")
    return Response(status_code=204)
