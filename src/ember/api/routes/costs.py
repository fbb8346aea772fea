"""The cost ledger (an Ember extension): reports of what replicas and predictions cost, the
prices they are billed at, and budgets that cap spend."""

from __future__ import annotations

import datetime
import re
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from ember.api import guards
from ember.api.auth import principal
from ember.api.errors import ApiError
from ember.api.responses import json_response
from ember.api.strict_json import StrictJSONRoute
from ember.control.access import Principal
from ember.control.platform import Platform
from ember.control.policies.budgets import Budget
from ember.control.prices import TOKEN_PRICES
from ember.control.reports import GROUPINGS, Grouping

router = APIRouter(prefix="/v1", route_class=StrictJSONRoute)
Caller = Annotated[Principal, Depends(principal)]
_RELATIVE = re.compile(r"^(\d+)\s*([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
SHORTEST_ADVICE_DAYS = 1 / 1440  # a minute: a shorter window rounds to nothing to replay


def parse_since(
    value: str | None, now: datetime.datetime | None = None
) -> datetime.datetime | None:
    """'15m', '24h', '7d', '2w' (before now) or an ISO 8601 date/time (UTC if no zone); a
    span reaching before the year 1 (or past int()'s digits) is a 422, not a 500."""
    if not value:
        return None
    now = now or datetime.datetime.now(datetime.UTC)
    if match := _RELATIVE.match(value.strip().lower()):
        try:
            return now - datetime.timedelta(**{_UNITS[match[2]]: int(match[1])})
        except (OverflowError, ValueError):
            raise ApiError(
                422, f"since={value!r} is out of range: give a span like 7d or an ISO 8601 date"
            ) from None
    try:
        moment = datetime.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(
            400, f"since={value!r} is neither a span like 15m, 24h, 7d, 2w nor an ISO 8601 date"
        ) from None
    # The database compares UTC wall times: an offset must be applied, not dropped.
    return moment.astimezone(datetime.UTC) if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)


@router.get("/costs")
async def costs(
    request: Request, caller: Caller, by: str = "deployment", since: str | None = None
) -> Response:
    """What replicas were billed and predictions were charged, grouped `by` deployment, day,
    hardware or token, since a moment (`since=7d` or an ISO date; default: everything)."""
    guards.admin(caller, "read costs")
    if by not in GROUPINGS:
        raise ApiError(400, f"by={by!r} is not one of {', '.join(GROUPINGS)}")
    platform: Platform = request.app.state.platform
    start = parse_since(since)
    grouping: Grouping = by  # type: ignore[assignment]
    rows = [row.to_dict() for row in await platform.insights.costs(grouping, start)]
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
    model_config = ConfigDict(extra="forbid", strict=True)

    per_second: float | None = Field(default=None, ge=0, description="USD per replica-second")
    dedicated_hourly: float | None = Field(default=None, ge=0, description="USD per hour")
    source: str | None = Field(default=None, max_length=500)


@router.patch("/prices/{sku}")
async def set_price(request: Request, sku: str, body: PriceUpdate, caller: Caller) -> Response:
    """Set a SKU's price; replicas started from now on are billed at it."""
    guards.admin(caller, "change prices")
    fields: dict[str, Any] = body.model_dump(exclude_unset=True)
    if not fields:
        raise ApiError(400, "give per_second, dedicated_hourly or source")
    platform: Platform = request.app.state.platform
    price = await platform.saved_prices.set(sku, **fields)  # PriceError: 400
    return json_response(price.to_dict())


class BudgetCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    scope: Literal["token", "deployment"]
    target: str = Field(min_length=1, description="a token id, or a deployment's owner/name")
    period: Literal["day", "month"]
    limit_usd: float = Field(gt=0, description="USD per UTC day or calendar month")


async def _budget_json(platform: Platform, budget: Budget) -> dict[str, Any]:
    spent, resets_at = await platform.budgets.standing(budget)
    return {**budget.__dict__, "spent_usd": spent, "resets_at": resets_at.isoformat()}


@router.get("/budgets")
async def list_budgets(request: Request, caller: Caller) -> Response:
    """Spend limits, with what each has spent this period and when it resets."""
    guards.admin(caller, "list budgets")
    platform: Platform = request.app.state.platform
    items = [await _budget_json(platform, b) for b in platform.budgets.all()]
    return json_response({"results": items})


@router.post("/budgets", status_code=201)
async def create_budget(request: Request, body: BudgetCreate, caller: Caller) -> Response:
    """Limit what a token's predictions or a deployment's replicas may cost per day or month;
    past it, predictions are refused with 402 until the period resets."""
    guards.admin(caller, "set budgets")
    platform: Platform = request.app.state.platform
    if body.scope == "deployment":
        owner, _, name = body.target.partition("/")
        await platform.deployments.get(owner, name)  # 404 with what exists if it does not
    elif body.target not in await platform.tokens.names():
        raise ApiError(404, f"no API token with id {body.target!r}: see `ember token create`")
    budget = await platform.budgets.add(body.scope, body.target, body.period, body.limit_usd)
    return json_response(await _budget_json(platform, budget), 201)


@router.delete("/budgets/{budget_id}", status_code=204)
async def delete_budget(request: Request, budget_id: str, caller: Caller) -> Response:
    guards.admin(caller, "remove budgets")
    platform: Platform = request.app.state.platform
    if not await platform.budgets.remove(budget_id):
        raise ApiError(404, f"no budget {budget_id!r}: `GET /v1/budgets` lists them")
    return Response(status_code=204)


@router.get("/deployments/{owner}/{name}/advice")
async def advice(
    request: Request, owner: str, name: str, caller: Caller, days: float = 7.0
) -> Response:
    """Replay the deployment's last `days` of traffic under its settings, other settings and a
    dedicated machine: monthly cost, cold starts and waiting of each, and a recommendation."""
    guards.admin(caller, "ask for advice")
    if not SHORTEST_ADVICE_DAYS <= days <= 90:
        raise ApiError(400, f"days={days:g}: give a window between a minute and 90 days")
    platform: Platform = request.app.state.platform
    result = await platform.insights.advice(owner, name, days)
    return json_response(result.to_dict())
