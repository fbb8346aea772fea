"""The `ember` command line. Thin: every command calls the library or the API."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer

from ember import __version__
from ember.cli.console import err, out
from ember.cli.inputs import InputSyntaxError
from ember.cli.local_run import RunFailed, package_schema, run_prediction
from ember.packages.environment import EnvironmentBuildError, MissingSystemPackages
from ember.packages.spec import PackageError
from ember.runtime.local import default_data_dir

app = typer.Typer(
    name="ember",
    help="Ember: serverless inference on your own machines. "
    "Run Cog, Truss or Ember models unchanged.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)

DataDir = Annotated[
    Path,
    typer.Option(
        "--data-dir",
        envvar="EMBER_HOME",
        help="Where Ember keeps environments, outputs and its database.",
        show_default="~/.ember",
    ),
]


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


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[bold red]error:[/bold red] {message}", highlight=False)
    return typer.Exit(code)


def _run_guarded(coroutine: object) -> object:
    """Run a coroutine, turning Ember's expected errors into messages and exit codes."""
    try:
        return asyncio.run(coroutine)  # type: ignore[arg-type]
    except (PackageError, InputSyntaxError) as exc:
        raise _fail(str(exc), 2) from None
    except MissingSystemPackages as exc:
        raise _fail(str(exc), 2) from None
    except EnvironmentBuildError as exc:
        raise _fail(f"{exc}\n\n{exc.log_tail}") from None
    except RunFailed as exc:
        raise _fail(str(exc), exc.code) from None


@app.command()
def run(
    path: Annotated[Path, typer.Argument(help="Package folder (ember.yaml, cog.yaml or Truss).")],
    inputs: Annotated[
        list[str] | None,
        typer.Option(
            "--input",
            "-i",
            help="An input as key=value; @file reads a local file; repeat a key for a list.",
        ),
    ] = None,
    output_dir: Annotated[
        Path, typer.Option("--output-dir", "-o", help="Where output files are written.")
    ] = Path("."),
    timeout: Annotated[
        float | None, typer.Option(help="Seconds the prediction may run before it is stopped.")
    ] = None,
    data_dir: DataDir = default_data_dir(),
) -> None:
    """Run one prediction of a package locally, in its own replica (like `cog predict`).

    Example: `ember run ./blur -i image=@cat.png -i blur=3` writes the blurred image here.
    """
    _run_guarded(run_prediction(path, inputs or [], output_dir, data_dir, timeout))


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    data_dir: DataDir = default_data_dir(),
    database_url: Annotated[
        str | None,
        typer.Option(
            envvar="EMBER_DATABASE_URL",
            help="e.g. postgresql://user@127.0.0.1:5432/ember (default: SQLite in the data dir).",
        ),
    ] = None,
    public_url: Annotated[
        str | None,
        typer.Option(
            help="The URL clients reach Ember at (for links in responses), "
            "e.g. https://ember.example.com behind a TLS proxy."
        ),
    ] = None,
) -> None:
    """Start the platform: Replicate-compatible API, control plane and local replicas.

    Example: `ember serve --port 8000`, then point a client at it:
    `replicate.Client(api_token=TOKEN, base_url="http://127.0.0.1:8000")`.
    """
    from ember.server import run as run_server

    def announce(token: str | None, url: str) -> None:
        if token:
            err.print(
                f"[bold]Admin token[/bold] (shown once, stored only as a hash):\n  {token}\n"
                f"[dim]export EMBER_TOKEN={token}[/dim]"
            )
        err.print(f"[green]Ember is serving at {url}[/green]  (Ctrl-C drains and stops)")

    run_server(host, port, data_dir, database_url, public_url, announce)


@app.command()
def schema(
    path: Annotated[Path, typer.Argument(help="Package folder (ember.yaml, cog.yaml or Truss).")],
    data_dir: DataDir = default_data_dir(),
) -> None:
    """Print a package's OpenAPI schema (Cog's shape: Input, Output, x-order, enums).

    Example: `ember schema ./hello | jq .components.schemas.Input`
    """
    document = _run_guarded(package_schema(path, data_dir))
    print(json.dumps(document, indent=2))
