"""Account, hardware and the webhook signing secret."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from ember.api import serialize
from ember.api.auth import principal
from ember.api.responses import json_response
from ember.api.strict_json import StrictJSONRoute
from ember.control.access import Principal
from ember.control.hardware import hardware_list
from ember.control.platform import Platform

router = APIRouter(prefix="/v1", route_class=StrictJSONRoute)
Caller = Annotated[Principal, Depends(principal)]


@router.get("/account")
async def account(caller: Caller) -> Response:
    """Replicate's account object, plus the token's `scope` (what the dashboard may offer)."""
    return json_response({**serialize.account(caller.owner), "scope": caller.scope})


@router.get("/hardware")
async def hardware(caller: Caller) -> Response:
    return json_response(hardware_list())


@router.get("/webhooks/default/secret")
async def webhook_secret(request: Request, caller: Caller) -> Response:
    """The secret that signs the webhooks of the caller's account (Standard Webhooks); each
    account has its own, so one tenant cannot forge calls to another's receivers."""
    platform: Platform = request.app.state.platform
    return json_response({"key": await platform.accounts.load_webhook_secret(caller.owner)})
