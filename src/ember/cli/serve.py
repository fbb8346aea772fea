"""`ember serve`: start the platform (API, control plane and replicas) in this process."""

from __future__ import annotations

import enum
import os
from pathlib import Path
from typing import Annotated

import typer

from ember.cli.console import err
from ember.cli.options import DataDir, examples, fail
from ember.packages.loader import read_package
from ember.runtime.local import default_data_dir

app = typer.Typer()


class RuntimeKind(enum.StrEnum):
    local = "local"
    ray = "ray"


@app.command(
    epilog=examples(
        "ember serve  # http://127.0.0.1:8000, data in ~/.ember",
        "ember serve --deploy ./hello  # and deploy a package folder as ember/hello",
        "ember serve --host 0.0.0.0 --public-url https://ember.example.com",
        "ember serve --runtime ray --ray-address auto  # replicas on this Ray cluster's nodes",
        "ember serve --allow-egress 10.0.0.0/8 --allow-egress minio.internal:9000"
        "  # let webhooks and input URLs reach these",
        "ember serve --metrics-port 9100  # /metrics without a token there, for Prometheus",
    )
)
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
    deploy: Annotated[
        list[Path] | None,
        typer.Option(
            help="Deploy this package folder at start as ember/NAME (its name); repeatable."
        ),
    ] = None,
    runtime: Annotated[
        RuntimeKind,
        typer.Option(help="Where replicas run: local processes, or the nodes of a Ray cluster."),
    ] = RuntimeKind.local,
    ray_address: Annotated[
        str | None,
        typer.Option(
            envvar="RAY_ADDRESS",
            help="With --runtime ray: `auto` (the cluster this machine joined with `ray start`), "
            "ray://HOST:10001, or none to start a one-node cluster here.",
        ),
    ] = None,
    allow_egress: Annotated[
        list[str] | None,
        typer.Option(
            envvar="EMBER_EGRESS_ALLOW",
            show_envvar=True,
            help="Webhooks and input URLs may not reach loopback, private or link-local "
            "addresses (127.0.0.1, 10.0.0.0/8, 169.254.169.254...), so that a caller cannot "
            "aim them at services inside your network; allow some anyway: an address, a "
            "range (10.0.0.0/8) or a host name, optionally with a port (127.0.0.1:9000). "
            "Repeatable; the variable takes a comma-separated list. Ember's own --public-url "
            "is always allowed.",
        ),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            envvar="EMBER_METRICS_PORT",
            show_envvar=True,
            min=1,
            max=65535,
            help="Also serve /metrics (Prometheus) on this port of the same host, without a "
            "token: for a scraper that cannot send one. Expose the port to it alone: the "
            "metrics name every tenant's deployments. On --port, /metrics needs an admin "
            "token.",
        ),
    ] = None,
    no_sandbox: Annotated[
        bool,
        typer.Option(
            "--no-sandbox",
            help="Run replicas without a sandbox, with the server's own rights and view of the "
            "machine (its data directory and secret key included). By default each replica "
            "runs in bubblewrap namespaces with cgroup limits from its package's `resources`; "
            "where that cannot be set up, serve stops and says what is missing. Same as "
            "EMBER_SANDBOX=off.",
        ),
    ] = False,
) -> None:
    """Start the platform: Replicate-compatible API, control plane and replicas.

    Then point a client at it: `replicate.Client(api_token=TOKEN,
    base_url="http://127.0.0.1:8000")`, or use `ember deploy` and `ember predict`.
    """
    from ember.egress import EgressPolicy
    from ember.runtime.sandbox import SANDBOX_ENV, SandboxUnavailable, sandbox_wanted
    from ember.server import run as run_server

    try:
        EgressPolicy(tuple(allow_egress or ()))
    except ValueError as exc:
        raise fail(f"--allow-egress: {exc}", 2) from None
    if no_sandbox:
        os.environ[SANDBOX_ENV] = "off"  # for this server, and for Ray nodes it starts
    try:
        sandbox_wanted()
    except ValueError as exc:
        raise fail(str(exc), 2) from None

    def announce(token: str | None, url: str) -> None:
        if token:
            err.print(
                f"[bold]Admin token[/bold] (shown once, stored only as a hash):\n  {token}\n"
                f"[dim]export EMBER_TOKEN={token}[/dim]"
            )
        err.print(f"[green]Ember is serving at {url}[/green]  (Ctrl-C drains and stops)")
        err.print(f"  dashboard: {url}/  (log in with an API token)", soft_wrap=True)
        if metrics_port is not None:
            err.print(f"  metrics: GET /metrics on {host}:{metrics_port}  (no token)")
        for folder in deploy or []:
            name = read_package(folder).name
            err.print(
                f"  ember/{name}: POST {url}/v1/deployments/ember/{name}/predictions",
                soft_wrap=True,
            )

    def progress(line: str) -> None:
        err.print(f"[dim]  {line}[/dim]", highlight=False)

    try:
        run_server(
            host=host,
            port=port,
            data_dir=data_dir,
            database_url=database_url,
            public_url=public_url,
            announce=announce,
            deploy=deploy or [],
            progress=progress,
            runtime=runtime.value,
            ray_address=ray_address,
            allow_egress=allow_egress or [],
            metrics_port=metrics_port,
        )
    except SandboxUnavailable as exc:
        raise fail(str(exc), 1) from None
