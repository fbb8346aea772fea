"""The `ember` command line: the root command, with each command (or group of commands) from
its own module, where it is both declared and implemented. Thin: every command calls the
library, or the HTTP API of a running `ember serve`.

The commands that talk to a server run inside `options.connect`, which turns the
`CommandFailed` they raise (with an exit status) into an error message. Program output goes
to stdout (prediction output, tables, a new token); progress, logs and hints go to stderr.
"""

from __future__ import annotations

from typing import Annotated

import typer

from ember import __version__
from ember.cli import (
    budgets,
    chat,
    costs,
    deploy,
    deployments,
    local_run,
    logs,
    predict,
    scale,
    schema,
    serve,
    status,
    tokens,
)
from ember.cli.console import out

app = typer.Typer(
    name="ember",
    help="Ember: serverless inference on your own machines. "
    "Run Cog, Truss or Ember models unchanged.\n\n"
    "**First steps**\n\n"
    "1. `ember serve`: start the platform on http://127.0.0.1:8000. The first start prints an "
    "admin token once: `export EMBER_TOKEN=...` in the terminal you work in.\n"
    "2. `ember deploy ./my-model --name ember/my-model`: build a package folder (ember.yaml, "
    "cog.yaml or Truss) and deploy it.\n"
    "3. `ember predict ember/my-model -i prompt=hello`: run it, its output streamed.\n"
    "4. `ember status`: deployments, replicas, spend and failures at a glance.\n\n"
    "No server needed to try a package: `ember run ./my-model -i prompt=hello`. "
    "`ember COMMAND --help` shows each command's options and examples.\n\n"
    "Tab completion (bash, zsh, fish): `ember --install-completion`, then open a new shell.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)


def _version(value: bool) -> None:
    if value:
        out.print(f"ember {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """Ember: serverless inference on your own machines."""


# In the order `ember --help` lists them. A module's app without a name adds its commands
# here; `ember budget ...` and `ember token ...` are groups.
app.add_typer(local_run.app)  # run
app.add_typer(serve.app)
app.add_typer(schema.app)
app.add_typer(deploy.app)
app.add_typer(scale.app)
app.add_typer(predict.app)
app.add_typer(status.app)
app.add_typer(chat.app)
app.add_typer(costs.app)  # costs, advise
app.add_typer(deployments.app)  # ls, rm
app.add_typer(logs.app)
app.add_typer(budgets.app)  # budget set|ls|rm
app.add_typer(tokens.app)  # token create|ls|rm
