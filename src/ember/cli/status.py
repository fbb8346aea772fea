"""`ember status`: the platform at a glance (the server, each deployment's replicas and queue,
the spend of the last 24 hours, the latest failures), so one command answers "is all well, and
if not, where do I look next?"."""

from __future__ import annotations

import datetime
from typing import Any

import httpx
import typer
from rich.table import Table
from rich.text import Text

from ember import __version__
from ember.cli.client import DEFAULT_URL, Client
from ember.cli.console import err, out
from ember.cli.options import ApiToken, ServerUrl, connect, examples
from ember.cli.tables import figure_cell, print_table, replicas_cell, tier_cell

FAILURES_SHOWN = 5
SPEND_ROWS_SHOWN = 5

app = typer.Typer()


@app.command(
    epilog=examples(
        "ember status",
        "ember status --url http://gpu-box:8000 --token r8_...",
        "watch -n 5 ember status  # keep it on a screen",
    )
)
def status(url: ServerUrl = DEFAULT_URL, token: ApiToken = None) -> None:
    """The platform at a glance: the server and its version, each deployment's replicas,
    queue and cold-start tier, the spend of the last 24 hours (admin tokens) and the latest
    failed predictions."""
    with connect(url, token) as client:
        _status(client)


def _status(client: Client) -> None:
    """Each section asks the API for one thing; the first that needs the token says what is
    wrong with it, after the header has shown the server itself is up."""
    # No token needed: "no server" is told apart from "bad token".
    sandbox = client.get("/health").get("sandbox")
    version = client.get("/openapi.json")["info"]["version"]
    account = client.request("GET", "/v1/account", ok=(401,))
    if isinstance(account, httpx.Response):  # the server is up: say so, then what to do
        _header(client, version, None, sandbox)
        client.check(account)
    _header(client, version, account["username"], sandbox)
    _deployments(list(client.pages("/v1/deployments")))
    _spend(client)
    page = client.get("/v1/predictions", params={"status": "failed"})
    _failures(page.get("results", []))


def _header(client: Client, version: str, account: str | None, sandbox: str | None) -> None:
    line = Text.assemble(("Ember ", "bold"), (version, "bold"), f" at {client.url}  ")
    line.append("● up", "green")
    if sandbox == "on":
        line.append("  replicas sandboxed")
    elif sandbox == "off":
        line.append("  replicas NOT sandboxed (--no-sandbox)", "bold red")
    if account:
        line.append(f"  account {account}")
    if version != __version__:
        line.append(f"  (this CLI is {__version__})", "yellow")
    out.print(line, soft_wrap=True)


def _deployments(deployments: list[dict[str, Any]]) -> None:
    if not deployments:
        out.print("\nNo deployments yet: `ember deploy PATH --name OWNER/NAME` makes one.")
        return
    table = Table(title="\nDeployments", title_justify="left", title_style="bold")
    for column in ("name", "model", "replicas", "queued", "running", "cold start", "min-max"):
        table.add_column(
            column,
            justify="right" if column in ("queued", "running", "min-max") else "left",
            overflow="fold" if column in ("name", "model") else "ellipsis",
        )
    for d in sorted(deployments, key=lambda d: (d["owner"], d["name"])):
        release = d["current_release"]
        config = release["configuration"]
        state = d.get("status") or {}
        table.add_row(
            f"{d['owner']}/{d['name']}",
            Text.assemble(release["model"], (f" {(release.get('version') or '')[:8]}", "dim")),
            replicas_cell(state),
            str(state.get("queued", 0)),
            str(state.get("running", 0)),
            tier_cell(state.get("cold_start")),
            f"{config['min_instances']}-{config['max_instances']}",
        )
    print_table(table)


def _spend(client: Client) -> None:
    """The last 24 hours by deployment; left out for tokens that may not see costs (403)."""
    report = client.request(
        "GET", "/v1/costs", ok=(403,), params={"by": "deployment", "since": "24h"}
    )
    if isinstance(report, httpx.Response):
        return
    total = report["total"]
    if not report["rows"]:
        out.print("\nSpend, last 24 h: nothing yet (no replica has run).")
        return
    table = Table(title="\nSpend, last 24 h (USD)", title_justify="left", title_style="bold")
    for heading in ("deployment", "requests", "failed", "cost $", "cold starts", "idle $"):
        table.add_column(heading, justify="left" if heading == "deployment" else "right")
    rows = sorted(report["rows"], key=lambda r: r["cost"] or 0, reverse=True)
    for row in [*rows[:SPEND_ROWS_SHOWN], total]:
        fields = ("key", "requests", "failed", "cost", "replicas", "idle_cost")
        table.add_row(
            *(figure_cell(f, row[f]) for f in fields), style="bold" if row is total else None
        )
    print_table(table)
    if len(rows) > SPEND_ROWS_SHOWN:
        err.print(f"[dim]{len(rows) - SPEND_ROWS_SHOWN} more: `ember costs --since 24h`[/dim]")


def _failures(predictions: list[dict[str, Any]]) -> None:
    """The newest failed predictions (the API lists newest first)."""
    failed = predictions[:FAILURES_SHOWN]
    if not failed:
        out.print("\nNo recent failed predictions.")
        return
    table = Table(title="\nRecent failures", title_justify="left", title_style="bold")
    table.add_column("id")
    table.add_column("model", overflow="fold")
    table.add_column("when", justify="right")
    table.add_column("error", overflow="ellipsis", no_wrap=True)
    for p in failed:
        error = (p.get("error") or "no error given").strip().splitlines() or [""]
        table.add_row(p["id"], p.get("model") or "-", _ago(p.get("created_at")), error[0])
    print_table(table)
    err.print("[dim]`ember logs ID` prints a prediction's logs.[/dim]")


def _ago(timestamp: str | None) -> str:
    """'42s ago', '5m ago', '3h ago', '2d ago' from an API timestamp."""
    if not timestamp:
        return "-"
    then = datetime.datetime.fromisoformat(timestamp)
    seconds = max(0.0, (datetime.datetime.now(datetime.UTC) - then).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size:.0f}{unit} ago"
    return f"{seconds:.0f}s ago"
