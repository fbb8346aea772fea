"""What the commands share: their options (data dir, server URL and token), the examples that
end every `--help`, tab completion of deployment names, and turning failures into an error
message and an exit status."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import httpx
import typer

from ember.cli.client import DEFAULT_URL, Client, CommandFailed, normalize_url
from ember.cli.console import err

NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,99}")


def examples(*lines: str) -> str:
    """An epilog of commands to copy, so that every `--help` ends with how the command is
    used; "command  # note" shows the note beside the command."""
    bullets = []
    for line in lines:
        command, _, note = line.partition("  # ")
        bullets.append(f"* `{command}`" + (f" — {note}" if note else ""))
    return "**Examples**\n\n" + "\n".join(bullets)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print `message` as an error; the exit to raise, with status `code`."""
    err.print(f"[bold red]error:[/bold red] {message}", highlight=False)
    return typer.Exit(code)


DataDir = Annotated[
    Path,
    typer.Option(
        "--data-dir",
        envvar="EMBER_HOME",
        help="Where Ember keeps environments, outputs and its database.",
        show_default="~/.ember",
    ),
]

# -- commands that talk to a running `ember serve` ---------------------------------------------

Inputs = Annotated[
    list[str] | None,
    typer.Option(
        "--input",
        "-i",
        help="An input as key=value; @file reads a local file; repeat a key for a list.",
    ),
]
ServerUrl = Annotated[
    str,
    typer.Option(
        "--url", envvar="EMBER_URL", help="The Ember server to talk to.", show_envvar=True
    ),
]
ApiToken = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="EMBER_TOKEN",
        help="API token (`ember serve` prints the admin token).",
        show_default=False,
    ),
]


@contextmanager
def connect(url: str, token: str | None) -> Iterator[Client]:
    """A client of the server at `url`; a `CommandFailed` raised with it becomes its message
    and exit status."""
    try:
        with Client(url, token) as client:
            yield client
    except CommandFailed as exc:
        raise fail(str(exc), exc.code) from None


def split_ref(ref: str) -> tuple[str, str]:
    """(owner, name) of an `owner/name` given on the command line."""
    owner, _, name = ref.partition("/")
    if not (NAME.fullmatch(owner) and NAME.fullmatch(name)):
        raise CommandFailed(
            f"{ref!r} is not owner/name: use lowercase letters, digits, '.', '_' or '-', "
            "e.g. ember/hello-world",
            2,
        )
    return owner, name


def complete_deployments(ctx: typer.Context, incomplete: str) -> list[str]:
    """Deployment names for tab completion, asked of the server the command would talk to;
    none when it does not answer within a second (a completion must never hang the shell)."""
    url = normalize_url(ctx.params.get("url") or os.environ.get("EMBER_URL") or DEFAULT_URL)
    token = ctx.params.get("token") or os.environ.get("EMBER_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        response = httpx.get(f"{url}/v1/deployments", headers=headers, timeout=1)
        names = [f"{d['owner']}/{d['name']}" for d in response.json()["results"]]
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return []
    return sorted(n for n in names if n.startswith(incomplete))
