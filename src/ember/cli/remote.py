"""The commands that talk to a running `ember serve`: deploy, scale, predict, ls, logs, rm, token.

Each function takes a `Client` and raises `CommandFailed` (with an exit status) when it cannot
finish; `main.py` turns that into a message. Program output goes to stdout (prediction output,
tables, a new token); progress, logs and hints go to stderr.
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote, urlparse

from rich.console import Console
from rich.filesize import decimal
from rich.live import Live
from rich.measure import Measurement
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from ember.cli.client import ApiError, Client, CommandFailed, when_missing
from ember.cli.console import err, out
from ember.cli.inputs import InputSyntaxError, parse_inputs
from ember.cli.local_run import output_kind, print_value
from ember.control.scaling import DEFAULT_IDLE_TIMEOUT, ScalingSettings, parse_keep_warm
from ember.packages.archive import write_archive

NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,99}")
TERMINAL = ("succeeded", "failed", "canceled")
READY_TIMEOUT = 600.0  # seconds `ember deploy --min-instances N` waits for its replicas
# Version build lines worth keeping on screen; the rest (uv's chatter) only pass the spinner.
IMPORTANT = re.compile(
    r"^(package:|environment ready|setup succeeded|this package is already|"
    r"Building Python environment|Waiting for another|"
    r"(llama\.cpp|sentence_transformers|vllm): )"  # an engine loading its model
)


def split_ref(ref: str) -> tuple[str, str]:
    owner, _, name = ref.partition("/")
    if not (NAME.fullmatch(owner) and NAME.fullmatch(name)):
        raise CommandFailed(
            f"{ref!r} is not owner/name: use lowercase letters, digits, '.', '_' or '-', "
            "e.g. ember/hello-world",
            2,
        )
    return owner, name


# -- progress display ---------------------------------------------------------------------


@contextmanager
def spinner(title: str) -> Iterator[Callable[[str], None]]:
    """A transient spinner on stderr; the yielded function shows a line next to the title."""
    widget = Spinner("dots", text=Text(title, style="bold"))
    with Live(widget, console=err, transient=True, refresh_per_second=12):

        def report(line: str) -> None:
            widget.update(text=Text.assemble((title, "bold"), "  ", (line.strip()[:100], "dim")))

        yield report


# -- deploy ---------------------------------------------------------------------------------


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


def deploy(
    client: Client,
    path: Path,
    ref: str,
    min_instances: int | None,
    max_instances: int | None,
    hardware: str | None,
    scaling: dict[str, Any] | None = None,
) -> None:
    """`scaling`: Ember's other scaling settings by field name (target_concurrency, ...)."""
    owner, name = split_ref(ref)
    scaling = dict(scaling or {})
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
        deployment = _settings_request(
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
        changes = _changed(release["configuration"], wanted)
        if release["version"] != vid:
            changes["version"] = vid
        if changes:
            deployment = _settings_request(
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
        f"{''.join(f', {k} {_show(k, config[k])}' for k in EXTRA_SETTINGS if k in config)})"
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


# -- scale ----------------------------------------------------------------------------------

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


def _show(field: str, value: Any) -> str:
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
    return UNSET_MEANS.get(field, "none") if value is None else _show(field, value)


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


def _changed(config: dict[str, Any], wanted: dict[str, Any]) -> dict[str, Any]:
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


def _settings_request(
    client: Client, method: str, path: str, body: dict[str, Any], context: str | None = None
) -> dict[str, Any]:
    """POST or PATCH a deployment; settings the server refuses (422) exit 2 with its reason."""
    try:
        return client.request(method, path, json=body)
    except ApiError as exc:
        if exc.status == 422:
            raise CommandFailed(f"{exc}" + (f"\n({context})" if context else ""), 2) from None
        raise


def scale(client: Client, ref: str, changes: dict[str, Any]) -> None:
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
        needed = _changed(config, changes)
        if needed:
            deployment = _settled(client, path, _settings_request(client, "PATCH", path, needed))
            release = deployment["current_release"]
            config = release["configuration"]
            what = ", ".join(f"{k} {_show(k, config.get(k, []))}" for k in needed)
            err.print(
                f"[green]✓[/green] {owner}/{name}: {what} [dim](release {release['number']}, "
                "applies live)[/dim]",
                highlight=False,
            )
        else:
            err.print(f"[dim]{owner}/{name} already has these settings: nothing changed[/dim]")
    print_table(settings_table(deployment))


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


def settings_table(deployment: dict[str, Any]) -> Table:
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
            value = Text(_show(field, config[field]))
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
        table.add_row("cold starts", cold_start_summary(cold_start), "")
    return table


def cold_start_summary(cold_start: dict[str, Any]) -> str:
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


# -- predict and logs -------------------------------------------------------------------------


def is_output_url(value: Any) -> bool:
    return isinstance(value, str) and "/v1/outputs/" in urlparse(value).path


def _has_output_url(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_has_output_url(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_output_url(v) for v in value)
    return is_output_url(value)


def download_outputs(client: Client, value: Any, output_dir: Path) -> Any:
    """Download every output file URL in `value` into output_dir; the value with paths."""
    if isinstance(value, dict):
        return {k: download_outputs(client, v, output_dir) for k, v in value.items()}
    if isinstance(value, list):
        return [download_outputs(client, v, output_dir) for v in value]
    if not is_output_url(value):
        return value
    output_dir.mkdir(parents=True, exist_ok=True)
    filename = Path(unquote(urlparse(value).path)).name or "output"
    target, n = output_dir / filename, 1
    while target.exists():
        target = output_dir / f"{Path(filename).stem}-{n}{Path(filename).suffix}"
        n += 1
    with target.open("wb") as handle:
        client.download(value, handle)
    return str(target)


def _item(data: str, schema: dict[str, Any] | None) -> Any:
    """One streamed output item: its text, or the JSON value it stands for."""
    output = (schema or {}).get("components", {}).get("schemas", {}).get("Output", {})
    if output.get("items", {}).get("type") == "string":
        return data
    try:
        return json.loads(data)
    except ValueError:
        return data


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _follow(
    client: Client,
    prediction: dict[str, Any],
    on_output: Callable[[str], None] | None,
    on_logs: Callable[[str], None],
    waiting: str | None = None,
) -> dict[str, Any]:
    """Follow a prediction's event stream to its end; the final prediction."""
    urls = prediction["urls"]
    shown = ""  # the logs printed: the stream replays those so far, then every new chunk
    with client.events("GET", urls["stream"]) as events:
        current = client.get(urls["get"])
        # A finished prediction's stream replays streamed output, then ends at once.
        title = waiting if current["status"] not in TERMINAL else None
        with _waiting(title) as first_event:
            for kind, data in events:
                first_event()
                if kind == "logs":
                    shown += data
                    on_logs(data)
                elif kind == "output" and on_output is not None:
                    on_output(data)
                elif kind == "done":
                    break
    final = client.get(urls["get"])
    deadline = time.monotonic() + 10
    while final["status"] not in TERMINAL and time.monotonic() < deadline:
        time.sleep(0.1)
        final = client.get(urls["get"])
    logs = final.get("logs") or ""
    if logs.startswith(shown) and len(logs) > len(shown):
        on_logs(logs[len(shown) :])  # anything the stream did not carry
    return final


@contextmanager
def _waiting(title: str | None) -> Iterator[Callable[[], None]]:
    """A spinner until the first event arrives (terminals only)."""
    if title is None or not err.is_terminal:
        yield lambda: None
        return
    live = Live(Spinner("dots", text=Text(title, style="bold")), console=err, transient=True)
    live.start()

    def stop() -> None:
        if live.is_started:
            live.stop()

    try:
        yield stop
    finally:
        stop()


def _print_logs(text: str) -> None:
    """Logs exactly as written (a "\r" still redraws a progress line), dim on a terminal."""
    sys.stderr.write(f"\x1b[2m{text}\x1b[0m" if err.is_terminal else text)
    sys.stderr.flush()


def _inputs_hint(schema: dict[str, Any] | None) -> str:
    component = (schema or {}).get("components", {}).get("schemas", {}).get("Input", {})
    props: dict[str, Any] = component.get("properties", {})
    required = set(component.get("required", []))
    parts = []
    for n in sorted(props, key=lambda n: props[n].get("x-order", 0)):
        kind = props[n].get("type") or ("choice" if "allOf" in props[n] else "value")
        parts.append(f"{n} ({kind}{', required' if n in required else ''})")
    return "its inputs: " + ", ".join(parts) if parts else "it takes no inputs"


def predict(client: Client, ref: str, raw_inputs: list[str], output_dir: Path) -> None:
    owner, name = split_ref(ref)
    deployment = client.find(f"/v1/deployments/{owner}/{name}")
    if deployment is not None:
        release = deployment["current_release"]
        version = client.get(f"/v1/models/{release['model']}/versions/{release['version']}")
        create = f"/v1/deployments/{owner}/{name}/predictions"
    else:
        model = client.find(f"/v1/models/{owner}/{name}")
        if model is None:
            raise CommandFailed(
                f"no deployment or model named {owner}/{name}: see `ember ls`, or deploy one "
                f"with `ember deploy PATH --name {owner}/{name}`"
            )
        version = model.get("latest_version")
        if not version:
            raise CommandFailed(
                f"model {owner}/{name} has no versions yet: "
                f"upload one with `ember deploy PATH --name {owner}/{name}`"
            )
        create = f"/v1/models/{owner}/{name}/predictions"
    schema = version.get("openapi_schema")
    try:
        inputs = parse_inputs(raw_inputs, schema)
    except InputSyntaxError as exc:
        raise CommandFailed(str(exc), 2) from None

    try:
        prediction = client.post(create, json={"input": inputs, "stream": True})
    except ApiError as exc:
        if exc.status == 422:
            raise CommandFailed(f"{exc}\n{owner}/{name}: {_inputs_hint(schema)}", 2) from None
        raise
    streams, concatenates = output_kind(schema)
    printed: list[bool] = []  # one per streamed item shown; True where text was written inline

    def on_output(data: str) -> None:
        if not streams:
            return  # the whole output comes with the final state
        item = _item(data, schema)
        if concatenates and isinstance(item, str):
            _write(item)
            printed.append(bool(item))
        elif not _has_output_url(item):
            print_value(item)
            printed.append(False)

    try:
        final = _follow(client, prediction, on_output, _print_logs, f"Running {owner}/{name}")
    except KeyboardInterrupt:
        client.post(prediction["urls"]["cancel"])
        raise CommandFailed(f"canceled prediction {prediction['id']}", 130) from None
    if concatenates and any(printed):
        _write("\n")

    status = final["status"]
    if status == "succeeded":
        output = final.get("output")
        if _has_output_url(output):
            output = download_outputs(client, output, output_dir)
            print_value(output)
        elif not streams or (not printed and output not in (None, [])):
            print_value("".join(map(str, output)) if concatenates else output)
        predict_time = (final.get("metrics") or {}).get("predict_time")
        timing = (
            f", predict_time {predict_time:.3f}s" if isinstance(predict_time, int | float) else ""
        )
        err.print(f"[dim]prediction {final['id']}{timing}[/dim]", highlight=False)
    elif status == "canceled":
        raise CommandFailed(f"prediction {final['id']} was canceled", 1)
    else:
        raise CommandFailed(
            f"prediction {final['id']} failed: {final.get('error') or 'no error given'}\n"
            f"See its logs again with `ember logs {final['id']}`."
        )


def logs(client: Client, prediction_id: str, follow: bool) -> None:
    if not prediction_id or "/" in prediction_id:
        raise CommandFailed(f"{prediction_id!r} is not a prediction id", 2)
    try:
        prediction = client.get(f"/v1/predictions/{prediction_id}")
    except ApiError as exc:
        if exc.status == 404:
            raise CommandFailed(
                f"no prediction {prediction_id}: copy the id `ember predict` printed"
            ) from None
        raise
    if follow and prediction["status"] not in TERMINAL:
        final = _follow(client, prediction, None, _write)
    else:
        _write(prediction.get("logs") or "")
        final = prediction
    note = f"prediction {final['id']}: {final['status']}"
    if final.get("error"):
        note += f" ({final['error']})"
    err.print(f"[dim]{note}[/dim]", highlight=False)


# -- ls, rm, token ----------------------------------------------------------------------------


def ls(client: Client) -> None:
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


def replicas_cell(status: dict[str, Any]) -> str:
    """'1 ready +1 starting' from a deployment's `status` (for `ember ls` and `ember status`)."""
    replicas = status.get("replicas") or {}
    starting = replicas.get("starting", 0)
    return f"{replicas.get('ready', 0)} ready" + (f" +{starting} starting" if starting else "")


def scaling_cell(status: dict[str, Any]) -> str:
    """What the scaler wants and why; a start waiting for a place on a cluster says so."""
    if status.get("placement"):
        return f"waiting for a place: {status['placement']}"
    scaling = status.get("scaling")
    return f"wants {scaling['desired']}: {scaling['reason']}" if scaling else "-"


def tier_cell(cold_start: dict[str, Any] | None) -> str:
    if not cold_start:
        return "-"
    return cold_start["tier"] + ("" if cold_start["ready"] else " (not ready)")


def print_table(table: Table) -> None:
    """Fit a terminal; into a pipe or file, print whole names however wide that makes it."""
    if out.is_terminal:
        out.print(table)
    else:
        natural = Measurement.get(out, out.options.update_width(10_000), table).maximum
        width = max(out.width, natural)
        Console(file=out.file, width=width).print(table)


def rm(client: Client, ref: str) -> None:
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


def token_create(
    client: Client, name: str, owner: str | None, scope: str, rate_limit: str | None = None
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


def token_ls(client: Client) -> None:
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


def token_rm(client: Client, token_id: str) -> None:
    with when_missing(f"no token {token_id}: `ember token ls` lists them"):
        client.delete(f"/v1/tokens/{token_id}")
    err.print(
        f"[green]✓[/green] revoked token {token_id}: requests that present it are refused",
        highlight=False,
    )
