"""API tokens (an Ember extension): an admin makes tokens for people and automation."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from ember.api.auth import principal
from ember.api.errors import ApiError
from ember.api.responses import json_response
from ember.control.platform import Platform, Principal

router = APIRouter(prefix="/v1")
Caller = Annotated[Principal, Depends(principal)]


class TokenCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    owner: str | None = Field(default=None, description="defaults to the caller's account")
    scope: Literal["admin", "deploy", "predict"] = "admin"


@router.post("/tokens", status_code=201)
async def create_token(request: Request, body: TokenCreate, caller: Caller) -> Response:
    """Make a token; it is shown in this answer only (Ember keeps just its hash)."""
    if caller.scope != "admin":
        raise ApiError(403, "only an admin token can create tokens")
    platform: Platform = request.app.state.platform
    owner = body.owner or caller.owner
    token_id, token = await platform.create_token(body.name, owner, body.scope)
    return json_response(
        {"id": token_id, "token": token, "name": body.name, "owner": owner, "scope": body.scope},
        201,
    )
