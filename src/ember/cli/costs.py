"""`ember costs`: the cost ledger as a table, JSON or CSV (the same figures in each); and
`ember advise`: a deployment's own traffic replayed under other settings, priced."""

from __future__ import annotations

import csv
import enum
import io
import json
from typing import Annotated, Any

import typer
from rich.table import Table

from ember.cli.client import DEFAULT_URL, Client
from ember.cli.console import err, out
from ember.cli.options import ApiToken, ServerUrl, complete_deployments, connect, examples, fail
from ember.cli.tables import figure_cell, print_table

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


class CostGrouping(enum.StrEnum):
    deployment = "deployment"
    day = "day"
    hardware = "hardware"
    token = "token"


class OutputFormat(enum.StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


app = typer.Typer()


@app.command(
    "costs",
    epilog=examples(
        "ember costs --since 24h",
        "ember costs --by token --since 30d  # what each API token's predictions cost",
        "ember costs --by day --since 7d --format csv > costs.csv",
    ),
)
def cost_report(
    by: Annotated[
        CostGrouping, typer.Option(help="Group by deployment, day, hardware or API token.")
    ] = CostGrouping.deployment,
    since: Annotated[
        str | None,
        typer.Option(help="Only since then: a span (24h, 7d, 2w) or an ISO date (UTC)."),
    ] = None,
    output_format: Annotated[
        OutputFormat, typer.Option("--format", help="table, json or csv (same figures).")
    ] = OutputFormat.table,
    url: ServerUrl = DEFAULT_URL,
    token: ApiToken = None,
) -> None:
    """What your replicas cost, from the ledger: requests, replica-seconds, cost, cost per
    request and per 1M tokens, cold starts (count, seconds, cost), idle-warm cost, utilization.

    Prices are per second of a replica's life by hardware SKU (`GET /v1/prices`; change one
    with `PATCH /v1/prices/{sku}`). By token, what was charged to each API token's predictions,
    plus one "(overhead)" row for idle-warm time and starts nobody waited for.
    """
    with connect(url, token) as client:
        _costs(client, by.value, since, output_format.value)


@app.command(
    "advise",
    epilog=examples(
        "ember advise  # every deployment, the last 7 days",
        "ember advise ember/sdxl --days 14",
        "ember advise ember/sdxl --format json",
    ),
)
def advise(
    names: Annotated[
        list[str] | None,
        typer.Argument(
            help="owner/name of deployments (default: all).",
            autocompletion=complete_deployments,
        ),
    ] = None,
    days: Annotated[
        float, typer.Option(min=0.01, max=90, help="How many days of traffic to replay.")
    ] = 7.0,
    output_format: Annotated[
        OutputFormat, typer.Option("--format", help="table or json.")
    ] = OutputFormat.table,
    url: ServerUrl = DEFAULT_URL,
    token: ApiToken = None,
) -> None:
    """Replay a deployment's own recent traffic under other settings and on a dedicated
    machine: the monthly bill, cold starts and waiting of each, and the command to apply the
    best one.
    """
    if output_format == OutputFormat.csv:
        raise fail("ember advise prints a table or json", 2)
    with connect(url, token) as client:
        _advise(client, names or [], days, output_format.value)


def _costs(client: Client, by: str, since: str | None, output: str) -> None:
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
        cells = [figure_cell(field, row[field]) for field, _ in COLUMNS]
        table.add_row(*cells, style="bold" if row is report["total"] else None)
    print_table(table)
    units = report["total"].get("cost_per_unit") or {}
    for unit, price in units.items():
        out.print(f"per {unit}: ${price:.6f}", highlight=False)
    if not report["rows"]:
        err.print("[dim]No replica has run in this window yet.[/dim]")


def _money(value: float) -> str:
    return f"${value:,.2f}" if value >= 1 else f"${value:.4f}"


def _advise(client: Client, refs: list[str], days: float, output: str) -> None:
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
    print_table(table)
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
