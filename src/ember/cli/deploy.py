"""`ember deploy`: upload a package folder as a new version and deploy it, then say how to
call it. Progress (packing, upload, build, replicas starting) goes to stderr; how to call the
deployment goes to stdout."""

from __future__ import annotations

import json
import re
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO, Annotated, Any

import typer
from rich.filesize import decimal
from rich.live import Live
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.spinner import Spinner
from rich.text import Text

from ember.cli.client import DEFAULT_URL, Client, CommandFailed
from ember.cli.console import err, out
from ember.cli.options import NAME, ApiToken, ServerUrl, connect, examples, split_ref
from ember.cli.scale import (
    EXTRA_SETTINGS,
    ColdStartTierOption,
    IdleTimeout,
    KeepWarm,
    MaxInstances,
    MinInstances,
    NoKeepWarm,
    QueueLimit,
    RequestTimeout,
    ScaleDownDelay,
    ScaleUpDelay,
    TargetConcurrency,
    changed,
    scaling_flags,
    settings_request,
    show,
)
from ember.cli.tables import replicas_cell, scaling_cell
from ember.control.scaling import parse_keep_warm
from ember.packages.archive import write_archive
from ember.packages.loader import read_package
from ember.packages.spec import PackageError

READY_TIMEOUT = 600.0  # seconds `ember deploy --min-instances N` waits for its replicas
# Version build lines worth keeping on screen; the rest (uv's chatter) only pass the spinner.
IMPORTANT = re.compile(
    r"^(package:|environment ready|setup succeeded|this package is already|"
    r"Building Python environment|Waiting for another|"
    r"(llama\.cpp|sentence_transformers|vllm): )"  # an engine loading its model
)

app = typer.Typer()


@app.command(
    "deploy",
    epilog=examples(
        "ember deploy ./hello                      # named by the package, under your account",
        "ember deploy ./hello --name ember/hello",
        "ember deploy ./sdxl --name ember/sdxl --hardware gpu-h100 --min-instances 1",
        'ember deploy ./hello --name ember/hello --keep-warm "mon-fri 08:00-19:00=1"',
    ),
)
def deploy_package(
    path: Annotated[Path, typer.Argument(help="Package folder (ember.yaml, cog.yaml or Truss).")],
    name: Annotated[
        str | None,
        typer.Option(
            "--name",
            "-n",
            help="owner/name (owner is your account, e.g. ember) or just name. Default: the "
            "package's own name (ember.yaml `name`, Cog `image` or the folder's name, Truss "
            "`model_name`) under your account.",
        ),
    ] = None,
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
    scaling = scaling_flags(
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
    with connect(url, token) as client:
        _deploy(client, path, name, min_instances, max_instances, hardware, scaling)


def package_name(path: Path) -> str:
    """The model name a package gives itself, made a valid Ember name: lowercase, a Cog
    image's tag dropped, other characters as '-' (`r8.im/acme/My_Model:v2` → `my_model`)."""
    try:
        spec = read_package(path)
    except PackageError as exc:
        raise CommandFailed(f"{path}: {exc}", 2) from None
    name = spec.name.split(":", 1)[0].lower()
    name = re.sub(r"[^a-z0-9._-]+", "-", name).lstrip("._-")[:100]
    if not NAME.fullmatch(name):
        raise CommandFailed(f"{path} gives no usable model name: deploy it with --name NAME", 2)
    return name


def _deploy(
    client: Client,
    path: Path,
    ref: str | None,
    min_instances: int | None,
    max_instances: int | None,
    hardware: str | None,
    scaling: dict[str, Any],
) -> None:
    """`ref`: owner/name, a name under the token's account, or None for the package's own
    name; `scaling`: Ember's other scaling settings by field name (target_concurrency, ...)."""
    for window in scaling.get("keep_warm") or []:
        try:  # before the upload, so a typo costs no build
            parse_keep_warm(window)
        except ValueError as exc:
            raise CommandFailed(f"--keep-warm: {exc}", 2) from None
    if not path.is_dir():
        raise CommandFailed(f"{path} is not a folder: give the package folder to deploy", 2)
    if not any((path / f).is_file() for f in ("ember.yaml", "cog.yaml", "config.yaml")):
        raise CommandFailed(
            f"{path} has no ember.yaml, cog.yaml or Truss config.yaml: is it a package folder?", 2
        )
    account = _account(client)
    if ref is None:
        owner, name = account, package_name(path)
    elif "/" not in ref:
        owner, name = split_ref(f"{account}/{ref}")
    else:
        owner, name = split_ref(ref)
    if owner != account:
        raise CommandFailed(
            f"deployments are created under your account {account!r}, not {owner!r}: "
            f"use --name {account}/{name}, or a token of the account {owner!r}",
            2,
        )

    body: dict[str, Any] = {"owner": owner, "name": name}
    if hardware:
        body["hardware"] = hardware
    created = client.post("/v1/models", json=body, ok=(409,))
    if isinstance(created, dict):
        err.print(f"[green]✓[/green] created model {owner}/{name}", highlight=False)

    with tempfile.TemporaryFile() as archive:
        with spinner(f"Packing {path}"):  # a big folder takes a while to compress
            count = write_archive(path, archive)
        size = archive.tell()
        archive.seek(0)
        err.print(f"[dim]uploading {path} ({count} files, {decimal(size)})[/dim]")
        version = _upload(client, owner, name, archive, size)
    vid = version["id"]
    err.print(f"[green]✓[/green] version {vid[:12]}", highlight=False)

    existing = client.find(f"/v1/deployments/{owner}/{name}")
    wanted = {
        k: v
        for k, v in (
            ("hardware", hardware),
            ("min_instances", min_instances),
            ("max_instances", max_instances),
            *scaling.items(),
        )
        if v is not None
    }
    if existing is None:
        min_n = min_instances if min_instances is not None else 0
        max_n = max_instances if max_instances is not None else max(1, min_n)
        deployment = settings_request(
            client,
            "POST",
            "/v1/deployments",
            {
                **scaling,
                "name": name,
                "model": f"{owner}/{name}",
                "version": vid,
                "hardware": hardware or "cpu",
                "min_instances": min_n,
                "max_instances": max_n,
            },
            f"version {vid[:12]} is uploaded, but the deployment was not created",
        )
        what = "created deployment"
    else:
        release = existing["current_release"]
        if release["model"] != f"{owner}/{name}":
            raise CommandFailed(
                f"deployment {owner}/{name} runs model {release['model']}, not {owner}/{name}: "
                f"remove it first with `ember rm {owner}/{name}`"
            )
        changes = changed(release["configuration"], wanted)
        if release["version"] != vid:
            changes["version"] = vid
        if changes:
            deployment = settings_request(
                client,
                "PATCH",
                f"/v1/deployments/{owner}/{name}",
                changes,
                f"version {vid[:12]} is uploaded, but the deployment was not updated",
            )
            what = "updated deployment"
        else:
            deployment, what = existing, "deployment already runs this version:"
    release = deployment["current_release"]
    config = release["configuration"]
    err.print(
        f"[green]✓[/green] {what} {owner}/{name} [dim](release {release['number']}, "
        f"{config['hardware']}, instances {config['min_instances']}-{config['max_instances']}"
        f"{''.join(f', {k} {show(k, config[k])}' for k in EXTRA_SETTINGS if k in config)})"
        "[/dim]",
        highlight=False,
    )
    if config["min_instances"] > 0:
        _wait_ready(client, owner, name, config["min_instances"])

    routes = (version.get("openapi_schema") or {}).get("info", {}).get("x-ember-openai")
    if routes:
        _openai_hint(client, f"{owner}/{name}", routes)
        return
    endpoint = f"{client.url}/v1/deployments/{owner}/{name}/predictions"
    example = _example_input(version.get("openapi_schema"))
    flags = "".join(
        f" -i {k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in example.items()
    )
    out.print()
    out.print(Text.assemble(("Endpoint  ", "bold"), f"POST {endpoint}"), soft_wrap=True)
    out.print(Text.assemble(("Try it    ", "bold"), f"ember predict {owner}/{name}{flags}"))
    snippet = (
        "import os\n"
        "import replicate\n\n"
        f'client = replicate.Client(api_token=os.environ["EMBER_TOKEN"], base_url="{client.url}")\n'
        f'deployment = client.deployments.get("{owner}/{name}")\n'
        f"prediction = deployment.predictions.create(input={example!r})\n"
        "prediction.wait()\n"
        "print(prediction.output)"
    )
    out.print("\n[dim]From Python (pip install replicate):[/dim]", highlight=False)
    out.print(snippet, markup=False, highlight=False, soft_wrap=True)


@contextmanager
def spinner(title: str) -> Iterator[Callable[[str], None]]:
    """A transient spinner on stderr; the yielded function shows a line next to the title."""
    widget = Spinner("dots", text=Text(title, style="bold"))
    with Live(widget, console=err, transient=True, refresh_per_second=12):

        def report(line: str) -> None:
            widget.update(text=Text.assemble((title, "bold"), "  ", (line.strip()[:100], "dim")))

        yield report


def _account(client: Client) -> str:
    return client.get("/v1/account")["username"]


@contextmanager
def transfer_bar(title: str, size: int) -> Iterator[Callable[[IO[bytes]], IO[bytes]]]:
    """A transient progress bar on stderr; the yielded function wraps a file so that reading
    it (as httpx does, in chunks, while uploading) advances the bar."""
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err, transient=True) as progress:
        yield lambda file: progress.wrap_file(file, total=size, description=title)


def _upload(client: Client, owner: str, name: str, archive: IO[bytes], size: int) -> dict[str, Any]:
    """Upload a package as a new version, showing the upload's, then the build's progress;
    the version."""
    version: dict[str, Any] | None = None
    error: str | None = None
    recent: deque[str] = deque(maxlen=20)
    path = f"/v1/models/{owner}/{name}/versions"
    with ExitStack() as stack:
        # The body is sent while the request opens; the build streams back once it has.
        with transfer_bar(f"Uploading {owner}/{name}", size) as reading:
            files = {"package": ("package.tar.gz", reading(archive), "application/gzip")}
            events = stack.enter_context(client.events("POST", path, files=files))
        report = stack.enter_context(spinner(f"Building {owner}/{name}"))
        for kind, data in events:
            if kind == "log":
                report(data)
                recent.append(data)
                if IMPORTANT.match(data):
                    err.print(Text.assemble(("  ", ""), (data, "dim")), highlight=False)
            elif kind == "version":
                version = json.loads(data)
            elif kind == "error":
                try:
                    error = json.loads(data).get("detail") or data
                except ValueError:
                    error = data
    if error is not None:
        raise CommandFailed(f"the package did not build:\n{error}")
    if version is None:
        tail = "\n".join(recent)
        raise CommandFailed(
            "the server ended the upload without a version or an error"
            + (f"; its last lines:\n{tail}" if tail else "")
        )
    return version


def _example_input(schema: dict[str, Any] | None) -> dict[str, Any]:
    """A plausible `input=` for the snippet: required inputs with placeholders."""
    component = (schema or {}).get("components", {}).get("schemas", {}).get("Input", {})
    props: dict[str, Any] = component.get("properties", {})
    names = [n for n in component.get("required", []) if n in props]
    if not names and props:
        names = sorted(props, key=lambda n: props[n].get("x-order", 0))[:1]
    placeholder = {"integer": 1, "number": 1.0, "boolean": True, "array": [], "object": {}}
    example: dict[str, Any] = {}
    for n in names:
        prop = props[n]
        if "default" in prop:
            example[n] = prop["default"]
        elif prop.get("format") == "uri":
            example[n] = f"https://example.com/{n}.png"
        else:
            example[n] = placeholder.get(prop.get("type", "string"), "hello")
    return example


def _wait_ready(client: Client, owner: str, name: str, wanted: int) -> None:
    """Wait for the replicas --min-instances keeps, so that a script may predict as soon as
    `ember deploy` returns (a large model loads for minutes: the spinner says what happens).
    Ctrl-C or READY_TIMEOUT stop the wait only: the deployment stays."""
    path = f"/v1/deployments/{owner}/{name}"
    began = time.monotonic()
    status: dict[str, Any] = {}
    try:
        with spinner(f"Starting {owner}/{name}") as report:
            while time.monotonic() - began < READY_TIMEOUT:
                status = client.get(path).get("status") or {}
                if (status.get("replicas") or {}).get("ready", 0) >= wanted:
                    err.print(
                        f"[green]✓[/green] {owner}/{name}: {replicas_cell(status)} "
                        f"[dim]({time.monotonic() - began:.1f} s)[/dim]",
                        highlight=False,
                    )
                    return
                reason = (status.get("scaling") or {}).get("reason", "")
                if status.get("setup_error"):
                    raise CommandFailed(
                        f"{owner}/{name} is deployed, but its replicas fail to start "
                        f"({reason}):\n{status['setup_error']}"
                    )
                report(f"{replicas_cell(status)}; {scaling_cell(status)}")
                time.sleep(0.25)
    except KeyboardInterrupt:
        pass
    err.print(
        f"[yellow]![/yellow] {owner}/{name} is deployed; {replicas_cell(status)} after "
        f"{time.monotonic() - began:.0f} s: `ember status` shows when they are",
        highlight=False,
    )


def _openai_hint(client: Client, model: str, routes: list[str]) -> None:
    """How to call a deployment that serves OpenAI's API (an LLM or embeddings engine)."""
    out.print()
    paths = ", ".join(f"/v1/{route.replace('.', '/')}" for route in routes)
    out.print(Text.assemble(("OpenAI API  ", "bold"), f"{client.url}/v1 ({paths})"))
    if "chat.completions" in routes:
        out.print(Text.assemble(("Try it      ", "bold"), f'ember chat {model} -m "Hello"'))
        call = (
            f"answer = client.chat.completions.create(\n"
            f'    model="{model}", messages=[{{"role": "user", "content": "Hello"}}]\n)\n'
            "print(answer.choices[0].message.content)"
        )
    else:
        call = (
            f'vectors = client.embeddings.create(model="{model}", input=["Hello"])\n'
            "print(len(vectors.data[0].embedding))"
        )
    snippet = (
        "import os\n"
        "from openai import OpenAI\n\n"
        f'client = OpenAI(api_key=os.environ["EMBER_TOKEN"], base_url="{client.url}/v1")\n' + call
    )
    out.print("\n[dim]From Python (pip install openai):[/dim]", highlight=False)
    out.print(snippet, markup=False, highlight=False, soft_wrap=True)
