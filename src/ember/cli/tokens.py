"""`ember token`: API tokens for people and automation, created, listed and revoked."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from ember.cli.client import DEFAULT_URL, Client, when_missing
from ember.cli.console import err, out
from ember.cli.options import ApiToken, ServerUrl, connect, examples, fail
from ember.cli.tables import print_table

app = typer.Typer(
    name="token",
    help="API tokens for people and automation (needs an admin token).",
    epilog=examples(
        "ember token create --name ci --scope deploy",
        "ember token ls",
        "ember token rm tok_0123",
    ),
    no_args_is_help=True,
    rich_markup_mode="markdown",
)


@app.command(
    "create",
    epilog=examples(
        "ember token create --name ci --scope deploy  # may deploy and predict",
        "ember token create --name alice-app --owner alice --scope predict",
        "ember token create --name public-demo --owner demo --scope predict --rate-limit 60/min",
    ),
)
def token_create(
    name: Annotated[str, typer.Option(help="What the token is for.")] = "ember-cli",
    owner: Annotated[
        str | None, typer.Option(help="The account it acts for (default: yours).")
    ] = None,
    scope: Annotated[
        str,
        typer.Option(
            help="predict (run and read its account's models), deploy (also create and change "
            "them) or admin (everything, every account, and tokens)."
        ),
    ] = "predict",
    rate_limit: Annotated[
        str | None,
        typer.Option(
            help="Requests it may make, e.g. 600/min, 10/s, 5000/h; past it, 429 with "
            "Retry-After (default: the server's EMBER_RATE_LIMIT for non-admin tokens)."
        ),
    ] = None,
    url: ServerUrl = DEFAULT_URL,
    token: ApiToken = None,
) -> None:
    """Create an API token; it is printed once and never shown again (Ember keeps its hash).

    A token acts for one account (`--owner`): it sees and changes only that account's
    models, deployments, predictions and files (and public models)."""
    if scope not in ("admin", "deploy", "predict"):
        raise fail(f"--scope must be admin, deploy or predict, not {scope!r}", 2)
    with connect(url, token) as client:
        _create(client, name, owner, scope, rate_limit)


@app.command("ls", epilog=examples("ember token ls"))
def token_list(url: ServerUrl = DEFAULT_URL, token: ApiToken = None) -> None:
    """List API tokens: id, name, account and scope (never the token itself: Ember keeps only
    its hash)."""
    with connect(url, token) as client:
        _list(client)


@app.command("rm", epilog=examples("ember token rm tok_0123  # ids: `ember token ls`"))
def token_remove(
    token_id: Annotated[str, typer.Argument(help="The token's id (see `ember token ls`).")],
    url: ServerUrl = DEFAULT_URL,
    token: ApiToken = None,
) -> None:
    """Revoke a token at once: requests that present it are refused (401) from now on."""
    with connect(url, token) as client:
        _remove(client, token_id)


def _create(
    client: Client, name: str, owner: str | None, scope: str, rate_limit: str | None
) -> None:
    body: dict[str, Any] = {"name": name, "scope": scope}
    if owner:
        body["owner"] = owner
    if rate_limit:
        body["rate_limit"] = rate_limit
    created = client.post("/v1/tokens", json=body)
    limit = f", at most {created['rate_limit']}" if created.get("rate_limit") else ""
    err.print(
        f"[green]✓[/green] token [bold]{created['name']}[/bold] ({created['id']}) for "
        f"account [bold]{created['owner']}[/bold], scope {created['scope']}{limit}. "
        "It is shown only now (Ember keeps just its hash):",
        highlight=False,
    )
    out.print(created["token"], markup=False, highlight=False, soft_wrap=True)
    err.print(f"[dim]export EMBER_TOKEN={created['token']}[/dim]", highlight=False, soft_wrap=True)


def _list(client: Client) -> None:
    tokens = list(client.pages("/v1/tokens"))
    if not tokens:
        err.print("No API tokens yet: make one with `ember token create --name NAME`.")
        return
    table = Table(title="API tokens", title_justify="left", title_style="bold")
    for column in ("id", "name", "account", "scope", "rate limit", "created"):
        table.add_column(column, overflow="fold" if column == "name" else "ellipsis")
    for t in tokens:
        created = (t.get("created_at") or "")[:16].replace("T", " ")
        limit = t.get("rate_limit") or "none"
        table.add_row(t["id"], t["name"], t["owner"], t["scope"], limit, created)
    print_table(table)
    err.print(
        "[dim]Only hashes are kept: a lost token cannot be shown again, revoke it with "
        "`ember token rm ID` and create another.[/dim]"
    )


def _remove(client: Client, token_id: str) -> None:
    with when_missing(f"no token {token_id}: `ember token ls` lists them"):
        client.delete(f"/v1/tokens/{token_id}")
    err.print(
        f"[green]✓[/green] revoked token {token_id}: requests that present it are refused",
        highlight=False,
    )
