"""`ember ls` and `ember rm`: the server's deployments and models, listed and removed."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from ember.cli.client import DEFAULT_URL, Client, CommandFailed
from ember.cli.console import err
from ember.cli.options import (
    ApiToken,
    ServerUrl,
    complete_deployments,
    connect,
    examples,
    split_ref,
)
from ember.cli.tables import print_table, replicas_cell, scaling_cell, tier_cell

app = typer.Typer()


@app.command(
    "ls",
    epilog=examples("ember ls", "ember ls --url http://gpu-box:8000  # another server"),
)
def list_deployments(url: ServerUrl = DEFAULT_URL, token: ApiToken = None) -> None:
    """List the server's deployments with their settings and replicas, and its models that
    have none."""
    with connect(url, token) as client:
        _list(client)


@app.command(epilog=examples("ember rm ember/hello"))
def rm(
    name: Annotated[
        str,
        typer.Argument(
            help="owner/name of the deployment and model.", autocompletion=complete_deployments
        ),
    ],
    url: ServerUrl = DEFAULT_URL,
    token: ApiToken = None,
) -> None:
    """Delete the deployment owner/name (if any) and the model owner/name with its versions."""
    with connect(url, token) as client:
        _remove(client, name)


def _list(client: Client) -> None:
    deployments = list(client.pages("/v1/deployments"))
    models = list(client.pages("/v1/models"))
    deployed = {d["current_release"]["model"] for d in deployments}
    if not deployments and not models:
        err.print("Nothing here yet: deploy a package with `ember deploy PATH --name OWNER/NAME`.")
        return
    if deployments:
        table = Table(title="Deployments", title_justify="left", title_style="bold")
        columns = (
            "name",
            "model",
            "version",
            "hardware",
            "min/max",
            "replicas",
            "queued",
            "scaling",
            "cold start",
            "release",
        )
        for column in columns:
            table.add_column(
                column,
                justify="right" if column in ("queued", "release") else "left",
                overflow="fold" if column in ("name", "model", "scaling") else "ellipsis",
            )
        for d in sorted(deployments, key=lambda d: (d["owner"], d["name"])):
            release = d["current_release"]
            config = release["configuration"]
            status = d.get("status") or {}
            table.add_row(
                f"{d['owner']}/{d['name']}",
                release["model"],
                (release.get("version") or "")[:12],
                config["hardware"],
                f"{config['min_instances']}/{config['max_instances']}",
                replicas_cell(status),
                str(status.get("queued", 0)),
                scaling_cell(status),
                tier_cell(status.get("cold_start")),
                str(release["number"]),
            )
        print_table(table)
    rest = [m for m in models if f"{m['owner']}/{m['name']}" not in deployed]
    if rest:
        table = Table(title="Models without a deployment", title_justify="left", title_style="bold")
        for column in ("name", "latest version", "hardware"):
            table.add_column(column, overflow="fold" if column == "name" else "ellipsis")
        for m in sorted(rest, key=lambda m: (m["owner"], m["name"])):
            latest = (m.get("latest_version") or {}).get("id")
            table.add_row(
                f"{m['owner']}/{m['name']}", latest[:12] if latest else "-", m["hardware"]
            )
        print_table(table)


def _remove(client: Client, ref: str) -> None:
    owner, name = split_ref(ref)
    removed = []
    for kind, path in (
        ("deployment", f"/v1/deployments/{owner}/{name}"),
        ("model", f"/v1/models/{owner}/{name}"),
    ):
        response = client.delete(path, ok=(404,))
        if response is None:
            removed.append(kind)
            err.print(f"[green]✓[/green] removed {kind} {owner}/{name}", highlight=False)
        else:
            err.print(f"[dim]no {kind} {owner}/{name}[/dim]", highlight=False)
    if not removed:
        raise CommandFailed(f"nothing named {owner}/{name} to remove: see `ember ls`")
