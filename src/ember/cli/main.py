"""The `ember` command line. Thin: every command calls the library or the API."""

from __future__ import annotations

import asyncio
import enum
import json
import os
from pathlib import Path
from typing import Annotated

import typer

from ember import __version__
from ember.cli.console import err, out
from ember.cli.inputs import InputSyntaxError
from ember.cli.local_run import RunFailed, package_schema, run_prediction
from ember.packages.environment import EnvironmentBuildError, MissingSystemPackages
from ember.packages.loader import read_package
from ember.packages.spec import PackageError
from ember.runtime.local import default_data_dir


def _examples(*lines: str) -> str:
    """An epilog of commands to copy, so that every `--help` ends with how the command is
    used; "command  # note" shows the note beside the command."""
    bullets = []
    for line in lines:
        command, _, note = line.partition("  # ")
        bullets.append(f"* `{command}`" + (f" — {note}" if note else ""))
    return "**Examples**\n\n" + "\n".join(bullets)


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


@app.command(
    epilog=_examples(
        "ember run ./blur -i image=@cat.png -i blur=3  # writes the blurred image here",
        "ember run ./hello -i name=Ada -o out/ --timeout 60",
    )
)
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
    """Run one prediction of a package locally, in its own replica (like `cog predict`)."""
    _run_guarded(run_prediction(path, inputs or [], output_dir, data_dir, timeout))


class RuntimeKind(enum.StrEnum):
    local = "local"
    ray = "ray"


@app.command(
    epilog=_examples(
        "ember serve  # http://127.0.0.1:8000, data in ~/.ember",
        "ember serve --deploy ./hello  # and deploy a package folder as ember/hello",
        "ember serve --host 0.0.0.0 --public-url https://ember.example.com",
        "ember serve --runtime ray --ray-address auto  # replicas on this Ray cluster's nodes",
        "ember serve --allow-egress 10.0.0.0/8 --allow-egress minio.internal:9000"
        "  # let webhooks and input URLs reach these",
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
) -> None:
    """Start the platform: Replicate-compatible API, control plane and replicas.

    Then point a client at it: `replicate.Client(api_token=TOKEN,
    base_url="http://127.0.0.1:8000")`, or use `ember deploy` and `ember predict`.
    """
    from ember.egress import EgressPolicy
    from ember.server import run as run_server

    try:
        EgressPolicy(tuple(allow_egress or ()))
    except ValueError as exc:
        raise _fail(f"--allow-egress: {exc}", 2) from None

    def announce(token: str | None, url: str) -> None:
        if token:
            err.print(
                f"[bold]Admin token[/bold] (shown once, stored only as a hash):\n  {token}\n"
                f"[dim]export EMBER_TOKEN={token}[/dim]"
            )
        err.print(f"[green]Ember is serving at {url}[/green]  (Ctrl-C drains and stops)")
        err.print(f"  dashboard: {url}/  (log in with an API token)", soft_wrap=True)
        for folder in deploy or []:
            name = read_package(folder).name
            err.print(
                f"  ember/{name}: POST {url}/v1/deployments/ember/{name}/predictions",
                soft_wrap=True,
            )

    def progress(line: str) -> None:
        err.print(f"[dim]  {line}[/dim]", highlight=False)

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
    )


@app.command(epilog=_examples("ember schema ./hello | jq .components.schemas.Input"))
def schema(
    path: Annotated[Path, typer.Argument(help="Package folder (ember.yaml, cog.yaml or Truss).")],
    data_dir: DataDir = default_data_dir(),
) -> None:
    """Print a package's OpenAPI schema (Cog's shape: Input, Output, x-order, enums)."""
    document = _run_guarded(package_schema(path, data_dir))
    print(json.dumps(document, indent=2))


# -- commands that talk to a running `ember serve` ---------------------------------------------

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
DEFAULT_URL = "http://127.0.0.1:8000"


def _remote(
    url: str, token: str | None, command: str, *args: object, module: str = "remote"
) -> None:
    """Run `ember.cli.<module>.<command>(client, *args)` against a server, turning failures
    into messages (modules are imported here: `ember --help` stays fast)."""
    import importlib

    from ember.cli.client import Client, CommandFailed

    commands = importlib.import_module(f"ember.cli.{module}")
    try:
        with Client(url, token) as client:
            getattr(commands, command)(client, *args)
    except CommandFailed as exc:
        raise _fail(str(exc), exc.code) from None


def _complete_deployments(ctx: typer.Context, incomplete: str) -> list[str]:
    """Deployment names for tab completion, asked of the server the command would talk to;
    none when it does not answer within a second (a completion must never hang the shell)."""
    import httpx

    from ember.cli.client import normalize_url

    url = normalize_url(ctx.params.get("url") or os.environ.get("EMBER_URL") or DEFAULT_URL)
    token = ctx.params.get("token") or os.environ.get("EMBER_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        response = httpx.get(f"{url}/v1/deployments", headers=headers, timeout=1)
        names = [f"{d['owner']}/{d['name']}" for d in response.json()["results"]]
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return []
    return sorted(n for n in names if n.startswith(incomplete))


# Scaling flags, shared by `ember deploy` and `ember scale` (defaults: ember.control.scaling).
SCALING = "Scaling"
MinInstances = Annotated[
    int | None,
    typer.Option(
        min=0,
        max=100,
        help="Replicas kept running (0: scale to zero; default 0).",
        rich_help_panel=SCALING,
    ),
]
MaxInstances = Annotated[
    int | None,
    typer.Option(
        min=1, max=100, help="Most replicas at once (default 1).", rich_help_panel=SCALING
    ),
]
TargetConcurrency = Annotated[
    int | None,
    typer.Option(
        min=1,
        max=10_000,
        help="Predictions one replica should carry (default: the model's concurrency).",
        rich_help_panel=SCALING,
    ),
]
ScaleUpDelay = Annotated[
    float | None,
    typer.Option(
        min=0,
        max=3600,
        help="Seconds demand must last before adding replicas (default 0).",
        rich_help_panel=SCALING,
    ),
]
ScaleDownDelay = Annotated[
    float | None,
    typer.Option(
        min=0,
        max=3600,
        help="Seconds demand must stay low before removing replicas (default 60).",
        rich_help_panel=SCALING,
    ),
]
IdleTimeout = Annotated[
    float | None,
    typer.Option(
        min=0,
        max=24 * 3600,
        help="Seconds without work before scaling to zero (default: learned, else 300).",
        rich_help_panel=SCALING,
    ),
]
QueueLimit = Annotated[
    int | None,
    typer.Option(
        min=0,
        max=1_000_000,
        help="Predictions that may wait; beyond it, 429 (default 10000).",
        rich_help_panel=SCALING,
    ),
]
KeepWarm = Annotated[
    list[str] | None,
    typer.Option(
        "--keep-warm",
        help='A window of replicas kept warm, UTC, e.g. "mon-fri 08:00-19:00=1"; repeatable '
        "(replaces the windows).",
        rich_help_panel=SCALING,
        show_default=False,
    ),
]
NoKeepWarm = Annotated[
    bool,
    typer.Option("--no-keep-warm", help="Remove every keep-warm window.", rich_help_panel=SCALING),
]
RequestTimeout = Annotated[
    float | None,
    typer.Option(
        max=24 * 3600,
        help="Seconds a prediction may run once a replica has it, > 0 (default: the package's).",
        rich_help_panel=SCALING,
    ),
]


class TierChoice(enum.StrEnum):
    auto = "auto"
    warm_host = "warm-host"
    disk = "disk"
    cold = "cold"


ColdStartTierOption = Annotated[
    TierChoice | None,
    typer.Option(
        help="What to keep ready for fast starts: a warm host that forks replicas, weights in "
        "the page cache, nothing; auto (default) gives warm hosts while memory allows.",
        rich_help_panel=SCALING,
    ),
]


def _scaling(
    keep_warm: list[str] | None, no_keep_warm: bool, **settings: object
) -> dict[str, object]:
    """The scaling settings given on the command line, by API field."""
    if keep_warm and no_keep_warm:
        raise _fail("--keep-warm and --no-keep-warm contradict each other: give one", 2)
    given = {k: v for k, v in settings.items() if v is not None}
    if no_keep_warm:
        given["keep_warm"] = []
    elif keep_warm:
        given["keep_warm"] = keep_warm
    return given


@app.command(
    "deploy",
    epilog=_examples(
        "ember deploy ./hello --name ember/hello",
        "ember deploy ./sdxl --name ember/sdxl --hardware gpu-h100 --min-instances 1",
        'ember deploy ./hello --name ember/hello --keep-warm "mon-fri 08:00-19:00=1"',
    ),
)
def deploy_package(
    path: Annotated[Path, typer.Argument(help="Package folder (ember.yaml, cog.yaml or Truss).")],
    name: Annotated[
        str, typer.Option("--name", "-n", help="owner/name; owner is your account (e.g. ember).")
    ],
    min_instances: MinInstances = None,
    max_instances: MaxInstances = None,
    hardware: Annotated[
        str | None, typer.Option(help="Hardware SKU, e.g. cpu or gpu-h100 (default cpu).")
    ] = None,
    target_concurrency: TargetConcurrency = None,
    scale_up_delay: ScaleUpDelay = None,
    scale_down_delay: ScaleDownDelay = None,
    idle_timeout: IdleTimeout = None,
    queue_limit: QueueLimit = None,
    keep_warm: KeepWarm = None,
    no_keep_warm: NoKeepWarm = False,
    request_timeout: RequestTimeout = None,
    cold_start_tier: ColdStartTierOption = None,
    url: ServerUrl = DEFAULT_URL,
    token: ApiToken = None,
) -> None:
    """Upload a package to an Ember server as a new version and deploy it (create or update).

    Scaling flags left out keep their current value (or the default, for a new deployment);
    change them later without a new version with `ember scale`. With --min-instances, it
    waits until those replicas are ready.
    """
    scaling = _scaling(
        keep_warm,
        no_keep_warm,
        target_concurrency=target_concurrency,
        scale_up_delay=scale_up_delay,
        scale_down_delay=scale_down_delay,
        idle_timeout=idle_timeout,
        queue_limit=queue_limit,
        request_timeout=request_timeout,
        cold_start_tier=cold_start_tier.value if cold_start_tier else None,
    )
    _remote(url, token, "deploy", path, name, min_instances, max_instances, hardware, scaling)


@app.command(
    epilog=_examples(
        "ember scale ember/hello  # show the settings and live status",
        "ember scale ember/hello --min-instances 1 --max-instances 4",
        'ember scale ember/hello --keep-warm "mon-fri 08:00-19:00=1"',
    )
)
def scale(
    name: Annotated[
        str,
        typer.Argument(help="owner/name of the deployment.", autocompletion=_complete_deployments),
    ],
    min_instances: MinInstances = None,
    max_instances: MaxInstances = None,
    target_concurrency: TargetConcurrency = None,
    scale_up_delay: ScaleUpDelay = None,
    scale_down_delay: ScaleDownDelay = None,
    idle_timeout: IdleTimeout = None,
    queue_limit: QueueLimit = None,
    keep_warm: KeepWarm = None,
    no_keep_warm: NoKeepWarm = False,
    request_timeout: RequestTimeout = None,
    cold_start_tier: ColdStartTierOption = None,
    url: ServerUrl = DEFAULT_URL,
    token: ApiToken = None,
) -> None:
    """Change how a deployment scales, live (a new release, same version and replicas);
    then print its settings, defaults marked, and its replicas and queue. With no flags,
    just print them.
    """
    changes = _scaling(
        keep_warm,
        no_keep_warm,
        min_instances=min_instances,
        max_instances=max_instances,
        target_concurrency=target_concurrency,
        scale_up_delay=scale_up_delay,
        scale_down_delay=scale_down_delay,
        idle_timeout=idle_timeout,
        queue_limit=queue_limit,
        request_timeout=request_timeout,
        cold_start_tier=cold_start_tier.value if cold_start_tier else None,
    )
    _remote(url, token, "scale", name, changes)


@app.command(
    epilog=_examples(
        "ember predict ember/hello -i text=world",
        "ember predict ember/blur -i image=@cat.png -i blur=3 -o out/  # @ uploads a file",
        "ember predict ember/tags -i tags=a -i tags=b  # a repeated key is a list",
    )
)
def predict(
    name: Annotated[
        str,
        typer.Argument(
            help="owner/name of a deployment or model.", autocompletion=_complete_deployments
        ),
    ],
    inputs: Annotated[
        list[str] | None,
        typer.Option(
            "--input",
            "-i",
            help="An input as key=value; @file reads a local file; repeat a key for a list.",
        ),
    ] = None,
    output_dir: Annotated[
        Path, typer.Option("--output-dir", "-o", help="Where output files are downloaded.")
    ] = Path("."),
    url: ServerUrl = DEFAULT_URL,
    token: ApiToken = None,
) -> None:
    """Run a prediction on a deployment (or model) of an Ember server, streaming its output;
    output files are downloaded. Ctrl-C cancels it."""
    _remote(url, token, "predict", name, inputs or [], output_dir)


@app.command(
    epilog=_examples(
        "ember status",
        "ember status --url http://gpu-box:8000 --token r8_...",
        "watch -n 5 ember status  # keep it on a screen",
    )
)
def status(url: ServerUrl = DEFAULT_URL, token: ApiToken = None) -> None:
    """The platform at a glance: the server and its version, each deployment's replicas,
    queue and cold-start tier, the spend of the last 24 hours (admin tokens) and the latest
    failed predictions."""
    _remote(url, token, "status", module="status")


@app.command(
    epilog=_examples(
        'ember chat ember/smollm2 -m "Name three colours"',
        'ember chat ember/smollm2 --system "Answer in French"  # a conversation',
        "ember chat ember/smollm2 < questions.txt  # one message per line",
    )
)
def chat(
    name: Annotated[
        str,
        typer.Argument(
            help="owner/name (or alias) of an LLM deployment.",
            autocompletion=_complete_deployments,
        ),
    ],
    message: Annotated[
        str | None,
        typer.Option("--message", "-m", help="Ask one question and exit (else: a conversation)."),
    ] = None,
    system: Annotated[
        str | None, typer.Option(help="A system prompt for the conversation.")
    ] = None,
    max_tokens: Annotated[int, typer.Option(min=1, help="Most tokens per answer.")] = 512,
    temperature: Annotated[
        float | None, typer.Option(min=0, max=2, help="Sampling temperature (model default).")
    ] = None,
    url: ServerUrl = DEFAULT_URL,
    token: ApiToken = None,
) -> None:
    """Chat with an LLM deployment through the OpenAI-compatible API, answers streamed as they
    are generated, then time to first token and tokens/s. Reads stdin when it is not a
    terminal, one message per line.
    """
    _remote(url, token, "chat", name, message, system, max_tokens, temperature, module="chat")


class CostGrouping(enum.StrEnum):
    deployment = "deployment"
    day = "day"
    hardware = "hardware"
    token = "token"


class OutputFormat(enum.StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


@app.command(
    "costs",
    epilog=_examples(
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
    _ledger(url, token, "costs", by.value, since, output_format.value)


def _ledger(url: str, token: str | None, command: str, *args: object) -> None:
    _remote(url, token, command, *args, module="costs")


@app.command(
    "advise",
    epilog=_examples(
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
            autocompletion=_complete_deployments,
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
        raise _fail("ember advise prints a table or json", 2)
    _ledger(url, token, "advise", names or [], days, output_format.value)


budget_app = typer.Typer(
    help="Spend limits per API token or deployment, per UTC day or month: past one, new "
    "predictions get 402 until it resets (needs an admin token).",
    epilog=_examples(
        "ember budget set --token-id tok_0123 --per day --limit 5",
        "ember budget ls",
    ),
    no_args_is_help=True,
    rich_markup_mode="markdown",
)
app.add_typer(budget_app, name="budget")


class BudgetPeriod(enum.StrEnum):
    day = "day"
    month = "month"


@budget_app.command(
    "set",
    epilog=_examples(
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
        typer.Option(help="A deployment's owner/name.", autocompletion=_complete_deployments),
    ] = None,
    url: ServerUrl = DEFAULT_URL,
    token: ApiToken = None,
) -> None:
    """Cap what one token's predictions (each end user with a token: "user pays") or one
    deployment's replicas may cost per day or month.
    """
    if bool(token_id) == bool(deployment):
        raise _fail("give exactly one of --token-id and --deployment", 2)
    _ledger(url, token, "budget_set", token_id, deployment, per.value, limit)


@budget_app.command("ls", epilog=_examples("ember budget ls"))
def budget_list(url: ServerUrl = DEFAULT_URL, token: ApiToken = None) -> None:
    """Budgets with what each has spent this period and when it resets."""
    _ledger(url, token, "budget_ls")


@budget_app.command("rm", epilog=_examples("ember budget rm bud_0123  # ids: `ember budget ls`"))
def budget_remove(
    budget_id: Annotated[str, typer.Argument(help="The budget's id (see `ember budget ls`).")],
    url: ServerUrl = DEFAULT_URL,
    token: ApiToken = None,
) -> None:
    """Remove a budget."""
    _ledger(url, token, "budget_rm", budget_id)


@app.command(
    "ls",
    epilog=_examples("ember ls", "ember ls --url http://gpu-box:8000  # another server"),
)
def list_deployments(url: ServerUrl = DEFAULT_URL, token: ApiToken = None) -> None:
    """List the server's deployments with their settings and replicas, and its models that
    have none."""
    _remote(url, token, "ls")


@app.command(
    epilog=_examples(
        "ember logs 4dhb7hve3b18pjbvxyif7fkesr",
        "ember logs 4dhb7hve3b18pjbvxyif7fkesr -f  # until it ends",
        "ember status  # lists recent failures with their ids",
    )
)
def logs(
    prediction_id: Annotated[str, typer.Argument(help="The prediction's id.")],
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new logs until it ends.")
    ] = False,
    url: ServerUrl = DEFAULT_URL,
    token: ApiToken = None,
) -> None:
    """Print a prediction's logs; with -f, follow a running one until it ends."""
    _remote(url, token, "logs", prediction_id, follow)


@app.command(epilog=_examples("ember rm ember/hello"))
def rm(
    name: Annotated[
        str,
        typer.Argument(
            help="owner/name of the deployment and model.", autocompletion=_complete_deployments
        ),
    ],
    url: ServerUrl = DEFAULT_URL,
    token: ApiToken = None,
) -> None:
    """Delete the deployment owner/name (if any) and the model owner/name with its versions."""
    _remote(url, token, "rm", name)


token_app = typer.Typer(
    help="API tokens for people and automation (needs an admin token).",
    epilog=_examples(
        "ember token create --name ci --scope deploy",
        "ember token ls",
        "ember token rm tok_0123",
    ),
    no_args_is_help=True,
    rich_markup_mode="markdown",
)
app.add_typer(token_app, name="token")


@token_app.command(
    "create",
    epilog=_examples(
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
        raise _fail(f"--scope must be admin, deploy or predict, not {scope!r}", 2)
    _remote(url, token, "token_create", name, owner, scope, rate_limit)


@token_app.command("ls", epilog=_examples("ember token ls"))
def token_list(url: ServerUrl = DEFAULT_URL, token: ApiToken = None) -> None:
    """List API tokens: id, name, account and scope (never the token itself: Ember keeps only
    its hash)."""
    _remote(url, token, "token_ls")


@token_app.command("rm", epilog=_examples("ember token rm tok_0123  # ids: `ember token ls`"))
def token_remove(
    token_id: Annotated[str, typer.Argument(help="The token's id (see `ember token ls`).")],
    url: ServerUrl = DEFAULT_URL,
    token: ApiToken = None,
) -> None:
    """Revoke a token at once: requests that present it are refused (401) from now on."""
    _remote(url, token, "token_rm", token_id)
