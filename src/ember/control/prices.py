"""What a second of each hardware SKU costs, and what the hosted alternatives charge.

Ember bills its own replicas as a serverless platform would (per second of a replica's life),
so teams see what a request costs on their machines and can compare. The defaults are public
list prices, each with its source; every team should set its own (`PATCH /v1/prices/{sku}`,
or a JSON/YAML file named by EMBER_PRICES read at start).

- Per-second rates: Replicate's public hardware prices (replicate.com/pricing, read
  2026-11-22), the usual reference for per-second serverless billing. H200 has no public
  per-second price there; its default is the H100's until you set yours.
- Dedicated hourly rates, for the serverless-vs-dedicated comparison, where the seed
  material gives one (shared/docs/economics.md): H100 $2.01/h (Spheron bare metal, on demand),
  A100 80GB $929/month = $1.27/h (dedicated A100 in the tokens table). Elsewhere none: set
  yours to get the comparison.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from ember.control.errors import BadRequest
from ember.store.repository import Store

REPLICATE = "replicate.com/pricing (2026-11-22)"


@dataclass(frozen=True)
class Price:
    sku: str
    per_second: float  # USD per second of a replica's life
    dedicated_hourly: float | None  # USD per hour of a dedicated machine of the kind, if known
    source: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


DEFAULT_PRICES: dict[str, Price] = {
    p.sku: p
    for p in [
        Price("cpu", 0.000100, None, REPLICATE),
        Price("gpu-t4", 0.000225, None, REPLICATE),
        Price("gpu-l40s", 0.000975, None, REPLICATE),
        Price("gpu-a40-large", 0.000725, None, REPLICATE),
        Price("gpu-a100-large", 0.001400, 929 / 730, f"{REPLICATE}; dedicated: economics.md"),
        Price("gpu-h100", 0.001525, 2.01, f"{REPLICATE}; dedicated: Spheron (economics.md)"),
        Price("gpu-h200", 0.001525, None, "no public per-second price: the H100's until set"),
    ]
}


@dataclass(frozen=True)
class TokenPrice:
    """A hosted provider's price per 1M tokens, for comparing LLM deployments."""

    provider: str
    model: str
    input_per_million: float
    output_per_million: float


# shared/docs/economics.md, "Per-token hosted prices".
TOKEN_PRICES: tuple[TokenPrice, ...] = (
    TokenPrice("Together AI", "Llama 3.1 70B", 0.54, 0.54),
    TokenPrice("Together AI", "Llama 3.1 8B", 0.10, 0.10),
    TokenPrice("Fireworks", "Llama 3.1 70B", 0.40, 0.40),
    TokenPrice("Fireworks", "Llama 3.1 8B", 0.10, 0.10),
    TokenPrice("Groq", "Llama 3.1 70B", 0.59, 0.79),
    TokenPrice("AWS Bedrock", "Llama 3.1 70B", 0.72, 0.72),
    TokenPrice("Vertex AI", "Gemini 2.0 Flash", 0.10, 0.40),
)


class PriceError(BadRequest):
    """A price that cannot be used; the message says which and why."""


def _rate(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PriceError(f"{what} must be a number of dollars, got {value!r}")
    if not (math.isfinite(value) and value >= 0):
        raise PriceError(f"{what} must be a finite number >= 0, got {value!r}")
    return float(value)


class PriceTable:
    """The prices in force: the defaults, overridden per SKU."""

    def __init__(self, overrides: dict[str, dict[str, Any]] | None = None) -> None:
        self._prices = dict(DEFAULT_PRICES)
        for sku, fields in (overrides or {}).items():
            self.set(sku, **fields)

    def get(self, sku: str) -> Price:
        """The price of `sku`; an unknown SKU costs what a CPU does (and says so)."""
        return self._prices.get(sku) or replace(
            self._prices["cpu"], sku=sku, source=f"unknown SKU: priced as cpu ({sku})"
        )

    def all(self) -> list[Price]:
        return list(self._prices.values())

    def set(self, sku: str, **fields: Any) -> Price:
        unknown = set(fields) - {"per_second", "dedicated_hourly", "source"}
        if unknown:
            raise PriceError(
                f"price of {sku}: unknown field(s) {', '.join(sorted(unknown))}; "
                "use per_second, dedicated_hourly or source"
            )
        current = self._prices.get(sku) or Price(sku, 0.0, None, "set by you")
        changes: dict[str, Any] = {"source": fields.get("source", "set by you")}
        if "per_second" in fields:
            changes["per_second"] = _rate(fields["per_second"], f"{sku} per_second")
        if "dedicated_hourly" in fields:
            value = fields["dedicated_hourly"]
            changes["dedicated_hourly"] = (
                None if value is None else _rate(value, f"{sku} dedicated_hourly")
            )
        price = self._prices[sku] = replace(current, **changes)
        return price

    def overrides(self) -> dict[str, dict[str, Any]]:
        """What differs from the defaults (what is saved)."""
        return {
            sku: {k: v for k, v in price.to_dict().items() if k != "sku"}
            for sku, price in self._prices.items()
            if DEFAULT_PRICES.get(sku) != price
        }


def load_overrides(path: Path) -> dict[str, dict[str, Any]]:
    """Prices from a JSON or YAML file: `{sku: {per_second, dedicated_hourly}}`."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise PriceError(f"cannot read prices from {path}: {exc}") from exc
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise PriceError(f"{path} is not valid {path.suffix.lstrip('.') or 'YAML'}: {exc}") from exc
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise PriceError(f"{path} must map SKUs to {{per_second: ..., dedicated_hourly: ...}}")
    PriceTable(data)  # validate now, with the file named in the error
    return data


def configured_overrides() -> dict[str, dict[str, Any]]:
    """The file named by EMBER_PRICES, if any."""
    path = os.environ.get("EMBER_PRICES")
    return load_overrides(Path(path)) if path else {}


class SavedPrices:
    """Prices set through the API (`PATCH /v1/prices/{sku}`): kept in the settings table and
    applied over the defaults and the EMBER_PRICES file at every start."""

    def __init__(self, table: PriceTable, store: Store) -> None:
        self.table = table
        self.store = store
        self._set: dict[str, dict[str, Any]] = {}

    async def load(self) -> None:
        saved = await asyncio.to_thread(self.store.setting, "prices")
        if saved:
            self._set = json.loads(saved)
            for sku, fields in self._set.items():
                self.table.set(sku, **fields)

    async def set(self, sku: str, **fields: Any) -> Price:
        """Change a SKU's price (PriceError if invalid); replicas started from now on pay it."""
        price = self.table.set(sku, **fields)
        self._set.setdefault(sku, {}).update(fields)
        await asyncio.to_thread(self.store.set_setting, "prices", json.dumps(self._set))
        return price
