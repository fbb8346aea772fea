"""`ember budget`: spend limits per API token or deployment, per UTC day or month."""

from __future__ import annotations

import enum
from typing import Annotated

import typer
from rich.table import Table

from ember.cli.client import DEFAULT_URL, Client, when_missing
from ember.cli.console import err
from ember.cli.options import ApiToken, ServerUrl, complete_deployments, connect, examples, fail
from ember.cli.tables import print_table

app = typer.Typer(
    name="budget",
    help="Spend limits per API token or deployment, per UTC day or month: past one, new "
    "predictions get 402 until it resets (needs an admin token).",
    epilog=examples(
        "ember budget set --token-id tok_0123 --per day --limit 5",
        "ember budget ls",
    ),
    no_args_is_help=True,
    rich_markup_mode="markdown",
)


class BudgetPeriod(enum.StrEnum):
    day = "day"
    month = "month"


@app.command(
    "set",
    epilog=examples(
        "ember budget set --token-id tok_0123 --per day --limit 5  # `ember token ls` has ids",
        "ember budget set --deployment ember/sdxl --per month --limit 200",
    ),
)
def budget_set(
    limit: Annotated[float, typer.Option(min=0.000001, help="USD per period.")],
    per: Annotated[BudgetPeriod, typer.Option(help="day or month (UTC).")] = BudgetPeriod.month,
    token_id: Annotated[
        str | None,
        typer.Option("--token-id", help="An API token's id (`ember token ls` lists them)."),
    ] = None,
    deployment: Annotated[
        str | None,
        typer.Option(help="A deployment's owner/name.", autocompletion=complete_deployments),
    ] = None,
    url: ServerUrl = DEFAULT_URL,
    token: ApiToken = None,
) -> None:
    """Cap what one token's predictions (each end user with a token: "user pays") or one
    deployment's replicas may cost per day or month.
    """
    if bool(token_id) == bool(deployment):
        raise fail("give exactly one of --token-id and --deployment", 2)
    with connect(url, token) as client:
        _set(client, token_id, deployment, per.value, limit)


@app.command("ls", epilog=examples("ember budget ls"))
def budget_list(url: ServerUrl = DEFAULT_URL, token: ApiToken = None) -> None:
    """Budgets with what each has spent this period and when it resets."""
    with connect(url, token) as client:
        _list(client)


@app.command("rm", epilog=examples("ember budget rm bud_0123  # ids: `ember budget ls`"))
def budget_remove(
    budget_id: Annotated[str, typer.Argument(help="The budget's id (see `ember budget ls`).")],
    url: ServerUrl = DEFAULT_URL,
    token: ApiToken = None,
) -> None:
    """Remove a budget."""
    with connect(url, token) as client:
        _remove(client, budget_id)


def _set(
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


def _list(client: Client) -> None:
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
    print_table(table)


def _remove(client: Client, budget_id: str) -> None:
    with when_missing(f"no budget {budget_id}: `ember budget ls` lists them"):
        client.delete(f"/v1/budgets/{budget_id}")
    err.print(f"[green]✓[/green] removed budget {budget_id}", highlight=False)
