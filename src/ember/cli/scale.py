"""`ember scale`: change how a deployment scales, live, and show its settings and status.

The scaling flags, and what comparing and showing settings takes, are shared with
`ember deploy`, which takes the same flags.
"""

from __future__ import annotations

import enum
import time
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from ember.cli.client import DEFAULT_URL, ApiError, Client, CommandFailed
from ember.cli.console import err
from ember.cli.options import (
    ApiToken,
    ServerUrl,
    complete_deployments,
    connect,
    examples,
    fail,
    split_ref,
)
from ember.cli.tables import print_table
from ember.control.scaling import DEFAULT_IDLE_TIMEOUT, ScalingSettings, parse_keep_warm

app = typer.Typer()

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


def scaling_flags(
    keep_warm: list[str] | None, no_keep_warm: bool, **settings: object
) -> dict[str, object]:
    """The scaling settings given on the command line, by API field."""
    if keep_warm and no_keep_warm:
        raise fail("--keep-warm and --no-keep-warm contradict each other: give one", 2)
    given = {k: v for k, v in settings.items() if v is not None}
    if no_keep_warm:
        given["keep_warm"] = []
    elif keep_warm:
        given["keep_warm"] = keep_warm
    return given


@app.command(
    epilog=examples(
        "ember scale ember/hello  # show the settings and live status",
        "ember scale ember/hello --min-instances 1 --max-instances 4",
        'ember scale ember/hello --keep-warm "mon-fri 08:00-19:00=1"',
    )
)
def scale(
    name: Annotated[
        str,
        typer.Argument(help="owner/name of the deployment.", autocompletion=complete_deployments),
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
    changes = scaling_flags(
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
    with connect(url, token) as client:
        _scale(client, name, changes)


def _scale(client: Client, ref: str, changes: dict[str, Any]) -> None:
    """Change a deployment's scaling settings (only those given); then show them and its
    live status. With no changes, just show them."""
    owner, name = split_ref(ref)
    path = f"/v1/deployments/{owner}/{name}"
    deployment = client.find(path)
    if deployment is None:
        raise CommandFailed(
            f"no deployment {owner}/{name}: see `ember ls`, or create it with "
            f"`ember deploy PATH --name {owner}/{name}`"
        )
    if changes:
        config = deployment["current_release"]["configuration"]
        needed = changed(config, changes)
        if needed:
            deployment = _settled(client, path, settings_request(client, "PATCH", path, needed))
            release = deployment["current_release"]
            config = release["configuration"]
            what = ", ".join(f"{k} {show(k, config.get(k, []))}" for k in needed)
            err.print(
                f"[green]✓[/green] {owner}/{name}: {what} [dim](release {release['number']}, "
                "applies live)[/dim]",
                highlight=False,
            )
        else:
            err.print(f"[dim]{owner}/{name} already has these settings: nothing changed[/dim]")
    print_table(_settings_table(deployment))


# The settings `ember scale` and `ember deploy` change, by API field, with their flags.
FLAGS = {
    "min_instances": "--min-instances",
    "max_instances": "--max-instances",
    "target_concurrency": "--target-concurrency",
    "scale_up_delay": "--scale-up-delay",
    "scale_down_delay": "--scale-down-delay",
    "idle_timeout": "--idle-timeout",
    "queue_limit": "--queue-limit",
    "keep_warm": "--keep-warm",
    "request_timeout": "--request-timeout",
    "cold_start_tier": "--cold-start-tier",
}
# Beyond Replicate's hardware/min/max: stored only when set, else ScalingSettings' default.
EXTRA_SETTINGS = [k for k in FLAGS if k not in ("min_instances", "max_instances")]
SECONDS = ("scale_up_delay", "scale_down_delay", "idle_timeout", "request_timeout")
# What a default of None means (the field's default comes from the model or from history).
UNSET_MEANS = {
    "target_concurrency": "the model's concurrency",
    "idle_timeout": f"learned, else {DEFAULT_IDLE_TIMEOUT:g}s",
    "request_timeout": "the package's timeout",
}


def show(field: str, value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(value) or "none"
    if field in SECONDS and isinstance(value, int | float):
        return f"{value:g}s"
    return str(value)


def _default_value(field: str) -> Any:
    """ScalingSettings' default for a field (None where the model or history decides)."""
    return ScalingSettings.model_fields[field].get_default(call_default_factory=True)


def _default(field: str) -> str:
    value = _default_value(field)
    return UNSET_MEANS.get(field, "none") if value is None else show(field, value)


def _same(field: str, current: Any, wanted: Any) -> bool:
    if field == "keep_warm":
        try:  # the server stores windows normalized ("mon-fri" as "mon,tue,wed,thu,fri")
            wanted = [str(parse_keep_warm(w)) for w in wanted]
        except ValueError:
            return False  # let the server say what is wrong
        return list(current or []) == wanted
    if current is None:
        return False
    return bool(current == wanted)


def changed(config: dict[str, Any], wanted: dict[str, Any]) -> dict[str, Any]:
    """The wanted settings that differ from a release's configuration (an unset one counts as
    its default, so asking for the default again changes nothing)."""
    changes = {}
    for field, value in wanted.items():
        current = config.get(field)
        if current is None and field in ScalingSettings.model_fields:
            current = _default_value(field)
        if not _same(field, current, value):
            changes[field] = value
    return changes


def settings_request(
    client: Client, method: str, path: str, body: dict[str, Any], context: str | None = None
) -> dict[str, Any]:
    """POST or PATCH a deployment; settings the server refuses (422) exit 2 with its reason."""
    try:
        return client.request(method, path, json=body)
    except ApiError as exc:
        if exc.status == 422:
            raise CommandFailed(f"{exc}" + (f"\n({context})" if context else ""), 2) from None
        raise


def _settled(client: Client, path: str, deployment: dict[str, Any]) -> dict[str, Any]:
    """The deployment once its control loop has acted on new settings (at most ~2 s): the
    PATCH answers before the next tick, so its status may still want what the old ones did."""
    deadline = time.monotonic() + 2
    while True:
        config = deployment["current_release"]["configuration"]
        desired = ((deployment.get("status") or {}).get("scaling") or {}).get("desired")
        if not isinstance(desired, int) or time.monotonic() > deadline:
            return deployment
        if config["min_instances"] <= desired <= config["max_instances"]:
            return deployment
        time.sleep(0.1)
        deployment = client.get(path)


def _settings_table(deployment: dict[str, Any]) -> Table:
    """A deployment's scaling settings (unset ones with their default) and live status."""
    release = deployment["current_release"]
    config = release["configuration"]
    table = Table(
        title=f"{deployment['owner']}/{deployment['name']}  [dim]release {release['number']}, "
        f"model {release['model']}[/dim]",
        title_justify="left",
        title_style="bold",
    )
    table.add_column("setting")
    table.add_column("value", overflow="fold")
    table.add_column("change with", style="dim")
    table.add_row("hardware", str(config.get("hardware", "-")), "ember deploy --hardware")
    for field, flag in FLAGS.items():
        if config.get(field) is None:
            value = Text.assemble(_default(field), (" (default)", "dim"))
        else:
            value = Text(show(field, config[field]))
        table.add_row(field, value, flag)
    status = deployment.get("status") or {}
    replicas = status.get("replicas") or {}
    scaling = status.get("scaling") or {}
    table.add_section()
    table.add_row(
        "replicas",
        f"{replicas.get('ready', 0)} ready, {replicas.get('starting', 0)} starting",
        "",
    )
    table.add_row(
        "predictions", f"{status.get('queued', 0)} queued, {status.get('running', 0)} running", ""
    )
    if scaling:
        table.add_row(
            "scaling", f"wants {scaling.get('desired', '?')}: {scaling.get('reason', '?')}", ""
        )
    if cold_start := status.get("cold_start"):
        table.add_row("cold starts", _cold_start_summary(cold_start), "")
    return table


def _cold_start_summary(cold_start: dict[str, Any]) -> str:
    """'warm-host, ready, setup in host, 520 MiB (fits the warm-host memory budget ...)'."""
    parts = [cold_start["tier"], "ready" if cold_start["ready"] else "not ready"]
    if cold_start.get("setup_in_host"):
        parts.append("setup in host")
    if cold_start.get("memory_bytes"):
        parts.append(f"{cold_start['memory_bytes'] / 2**20:.0f} MiB")
    summary = ", ".join(parts) + f" ({cold_start['reason']})"
    if cold_start.get("detail") and not cold_start["ready"]:
        summary += f": {cold_start['detail'].splitlines()[0]}"
    return summary
