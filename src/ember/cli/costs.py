"""`ember costs`: the cost ledger as a table, JSON or CSV (the same figures in each)."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from rich.table import Table

from ember.cli.client import Client, when_missing
from ember.cli.console import err, out

# (field, heading) in the order shown; every form carries these, plus the raw breakdown in JSON.
COLUMNS = (
    ("key", "group"),
    ("requests", "requests"),
    ("failed", "failed"),
    ("gpu_seconds", "replica-s"),
    ("utilization", "busy"),
    ("cost", "cost $"),
    ("cost_per_request", "$/request"),
    ("cost_per_million_tokens", "$/1M tok"),
    ("replicas", "cold starts"),
    ("cold_start_seconds", "start s"),
    ("cold_start_cost", "start $"),
    ("idle_cost", "idle $"),
    ("input_tokens", "tokens in"),
    ("output_tokens", "tokens out"),
)


def cell(field: str, value: Any) -> str:
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


def costs(client: Client, by: str, since: str | None, output: str) -> None:
    params = {"by": by, **({"since": since} if since else {})}
    report = client.get("/v1/costs", params=params)
    rows = [*report["rows"], report["total"]]
    if output == "json":
        out.print_json(json.dumps(report))
        return
    if output == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow([field for field, _ in COLUMNS])
        for row in rows:
            writer.writerow(["" if row[f] is None else row[f] for f, _ in COLUMNS])
        out.file.write(buffer.getvalue())
        return
    window = f"since {report['since']}" if report["since"] else "all time"
    table = Table(title=f"Costs by {by}, {window} (USD)", title_justify="left", title_style="bold")
    for field, heading in COLUMNS:
        table.add_column(heading, justify="left" if field == "key" else "right")
    for row in rows:
        cells = [cell(field, row[field]) for field, _ in COLUMNS]
        table.add_row(*cells, style="bold" if row is report["total"] else None)
    out.print(table)
    units = report["total"].get("cost_per_unit") or {}
    for unit, price in units.items():
        out.print(f"per {unit}: ${price:.6f}", highlight=False)
    if not report["rows"]:
        err.print("[dim]No replica has run in this window yet.[/dim]")


def budget_set(
    client: Client, token_id: str | None, deployment: str | None, period: str, limit: float
) -> None:
    scope, target = ("token", token_id) if token_id else ("deployment", deployment)
    body = {"scope": scope, "target": target, "period": period, "limit_usd": limit}
    lister = "`ember ls` lists deployments" if deployment else "`ember token ls` lists ids"
    with when_missing(f"no {scope} {target}: {lister}"):
        created = client.post("/v1/budgets", json=body)
    err.print(
        f"[green]✓[/green] budget {created['id']}: ${limit:g} per {period} for {scope} {target} "
        f"(spent ${created['spent_usd']:.4f} so far; resets {created['resets_at']})",
        highlight=False,
    )


def budget_ls(client: Client) -> None:
    budgets = client.get("/v1/budgets")["results"]
    if not budgets:
        err.print("No budgets: set one with `ember budget set --token-id ID --per day --limit 5`.")
        return
    table = Table(title="Budgets (USD)", title_justify="left", title_style="bold")
    for column in ("id", "for", "per", "limit", "spent", "resets at"):
        table.add_column(column, justify="right" if column in ("limit", "spent") else "left")
    for b in budgets:
        table.add_row(
            b["id"],
            f"{b['scope']} {b['target']}",
            b["period"],
            f"{b['limit_usd']:g}",
            f"{b['spent_usd']:.4f}",
            b["resets_at"],
        )
    out.print(table)


def budget_rm(client: Client, budget_id: str) -> None:
    with when_missing(f"no budget {budget_id}: `ember budget ls` lists them"):
        client.delete(f"/v1/budgets/{budget_id}")
    err.print(f"[green]✓[/green] removed budget {budget_id}", highlight=False)


def _money(value: float) -> str:
    return f"${value:,.2f}" if value >= 1 else f"${value:.4f}"


def advise(client: Client, refs: list[str], days: float, output: str) -> None:
    if not refs:
        refs = [f"{d['owner']}/{d['name']}" for d in client.pages("/v1/deployments")]
        if not refs:
            err.print("No deployments to advise on: deploy one with `ember deploy`.")
            return
    reports = []
    for ref in refs:
        owner, _, name = ref.partition("/")
        reports.append(client.get(f"/v1/deployments/{owner}/{name}/advice", params={"days": days}))
    if output == "json":
        out.print_json(json.dumps(reports if len(reports) > 1 else reports[0]))
        return
    for report in reports:
        _print_advice(report)


def _print_advice(report: dict[str, Any]) -> None:
    price = report["price"]
    out.print(
        f"\n[bold]{report['deployment']}[/bold]: {report['requests']} requests in "
        f"{report['days']:.1f} days, {report['busy_hours_per_day']:.2f} busy hours a day, on "
        f"{price['sku']} at ${price['per_second']:g}/s",
        highlight=False,
    )
    table = Table(title="Monthly, replaying this traffic", title_justify="left", title_style="bold")
    for column in ("option", "bill", "waiting*", "waited for a start", "p99 wait", "apply"):
        table.add_column(column, justify="right" if column in ("bill", "waiting*") else "left")
    options = list(report["options"])
    if report["dedicated"]:
        options.append(report["dedicated"])
    for option in options:
        chosen = option["name"] == report["recommended"]["name"]
        table.add_row(
            ("→ " if chosen else "  ") + option["name"],
            _money(option["monthly_cost"]),
            _money(option["waiting_cost"]),
            f"{option['start_wait_rate']:.1%}",
            f"{option['p99_delay']:.2f} s",
            option["apply"],
            style="bold green" if chosen else None,
        )
    out.print(table)
    out.print(
        "[dim]* waiting priced at the keep-alive's rate of replica-seconds per second a "
        "request waits (policies/costs.py); the recommendation (→) minimises bill + waiting.[/dim]"
    )
    out.print(f"Serverless or dedicated: {report['verdict']}", highlight=False)
    if report["fewer_cold_starts"]:
        calm = report["fewer_cold_starts"]
        out.print(
            f"For fewer cold starts: {calm['name']} ({_money(calm['monthly_cost'])}/month, "
            f"{calm['start_wait_rate']:.1%} wait for a start): {calm['apply']}",
            highlight=False,
        )
    for row in report["token_providers"][:3]:
        out.print(
            f"Same tokens on {row['provider']} {row['model']}: {_money(row['monthly_cost'])}/month",
            highlight=False,
        )
