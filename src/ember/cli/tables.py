"""Tables on the terminal, and the cells that more than one command shows: a deployment's
live status (`ember ls`, `ember status`, `ember deploy`) and the ledger's figures
(`ember costs`, `ember status`)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from ember.cli.console import out


def print_table(table: Table) -> None:
    """Fit a terminal; into a pipe or file, print whole names however wide that makes it."""
    if out.is_terminal:
        out.print(table)
    else:
        natural = Measurement.get(out, out.options.update_width(10_000), table).maximum
        width = max(out.width, natural)
        Console(file=out.file, width=width).print(table)


def replicas_cell(status: dict[str, Any]) -> str:
    """'1 ready +1 starting' from a deployment's `status` (for `ember ls` and `ember status`)."""
    replicas = status.get("replicas") or {}
    starting = replicas.get("starting", 0)
    return f"{replicas.get('ready', 0)} ready" + (f" +{starting} starting" if starting else "")


def scaling_cell(status: dict[str, Any]) -> str:
    """What the scaler wants and why; a start waiting for a place on a cluster says so."""
    if status.get("placement"):
        return f"waiting for a place: {status['placement']}"
    scaling = status.get("scaling")
    return f"wants {scaling['desired']}: {scaling['reason']}" if scaling else "-"


def tier_cell(cold_start: dict[str, Any] | None) -> str:
    if not cold_start:
        return "-"
    return cold_start["tier"] + ("" if cold_start["ready"] else " (not ready)")


def figure_cell(field: str, value: Any) -> str:
    """A figure as tables show it (money to the precision small amounts need)."""
    if value is None:
        return "-"
    if field == "utilization":
        return f"{value:.0%}"
    if field in ("cost", "cost_per_request", "cold_start_cost", "idle_cost"):
        return f"{value:.6f}" if value < 1 else f"{value:,.2f}"
    if field == "cost_per_million_tokens":
        return f"{value:,.2f}"
    if isinstance(value, float):
        return f"{value:,.1f}"
    return str(value)
