"""The cost ledger (an Ember extension): reports of what replicas and predictions cost, and
the prices they are billed at."""

from __future__ import annotations

import datetime
import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from ember.api.auth import principal
from ember.api.errors import ApiError
from ember.api.responses import json_response
from ember.control.platform import Platform, Principal
from ember.control.prices import TOKEN_PRICES, PriceError
from ember.control.reports import GROUPINGS, Grouping

router = APIRouter(prefix="/v1")
Caller = Annotated[Principal, Depends(principal)]
_RELATIVE = re.compile(r"^(\d+)\s*([hdw])$")
_UNITS = {"h": "hours", "d": "days", "w": "weeks"}


def parse_since(
    value: str | None, now: datetime.datetime | None = None
) -> datetime.datetime | None:
    """'7d', '24h', '2w' (before now) or an ISO 8601 date/time (UTC if no zone)."""
    if not value:
        return None
    now = now or datetime.datetime.now(datetime.UTC)
    if match := _RELATIVE.match(value.strip().lower()):
        return now - datetime.timedelta(**{_UNITS[match[2]]: int(match[1])})
    try:
        moment = datetime.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(
            400, f"since={value!r} is neither a span like 7d, 24h, 2w nor an ISO 8601 date"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)


def _admin(caller: Principal) -> None:
    if caller.scope != "admin":
        raise ApiError(403, "costs and prices are for admin tokens")


@router.get("/costs")
async def costs(
    request: Request, caller: Caller, by: str = "deployment", since: str | None = None
) -> Response:
    """What replicas were billed and predictions were charged, grouped `by` deployment, day,
    hardware or token, since a moment (`since=7d` or an ISO date; default: everything)."""
    _admin(caller)
    if by not in GROUPINGS:
        raise ApiError(400, f"by={by!r} is not one of {', '.join(GROUPINGS)}")
    platform: Platform = request.app.state.platform
    start = parse_since(since)
    grouping: Grouping = by  # type: ignore[assignment]
    rows = [row.to_dict() for row in await platform.costs(grouping, start)]
    return json_response(
        {
            "by": by,
            "since": start.isoformat() if start else None,
            "currency": "USD",
            "rows": rows[:-1],
            "total": rows[-1],
        }
    )


@router.get("/prices")
async def prices(request: Request, caller: Caller) -> Response:
    """Per-second prices of each hardware SKU (with dedicated hourly rates where known), and
    hosted per-token prices for comparison."""
    platform: Platform = request.app.state.platform
    return json_response(
        {
            "currency": "USD",
            "hardware": [price.to_dict() for price in platform.prices.all()],
            "tokens": [price.__dict__ for price in TOKEN_PRICES],
        }
    )


class PriceUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    per_second: float | None = Field(default=None, ge=0, description="USD per replica-second")
    dedicated_hourly: float | None = Field(default=None, ge=0, description="USD per hour")
    source: str | None = Field(default=None, max_length=500)


@router.patch("/prices/{sku}")
async def set_price(request: Request, sku: str, body: PriceUpdate, caller: Caller) -> Response:
    """Set a SKU's price; replicas started from now on are billed at it."""
    _admin(caller)
    fields: dict[str, Any] = body.model_dump(exclude_unset=True)
    if not fields:
        raise ApiError(400, "give per_second, dedicated_hourly or source")
    platform: Platform = request.app.state.platform
    try:
        price = await platform.set_price(sku, **fields)
    except PriceError as exc:
        raise ApiError(400, str(exc)) from exc
    return json_response(price.to_dict())
