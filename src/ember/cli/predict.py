"""`ember predict`: run a prediction on a server, its output streamed to stdout as it is
produced and its logs to stderr; output files are downloaded. `ember logs` follows a prediction
the same way."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import unquote, urlparse

import typer
from rich.live import Live
from rich.spinner import Spinner
from rich.text import Text

from ember.cli.client import DEFAULT_URL, ApiError, Client, CommandFailed
from ember.cli.console import err
from ember.cli.inputs import InputSyntaxError, parse_inputs
from ember.cli.local_run import output_kind, print_value
from ember.cli.options import (
    ApiToken,
    Inputs,
    ServerUrl,
    complete_deployments,
    connect,
    examples,
    split_ref,
)

TERMINAL = ("succeeded", "failed", "canceled")

app = typer.Typer()


@app.command(
    epilog=examples(
        "ember predict ember/hello -i text=world",
        "ember predict ember/blur -i image=@cat.png -i blur=3 -o out/  # @ uploads a file",
        "ember predict ember/tags -i tags=a -i tags=b  # a repeated key is a list",
    )
)
def predict(
    name: Annotated[
        str,
        typer.Argument(
            help="owner/name of a deployment or model.", autocompletion=complete_deployments
        ),
    ],
    inputs: Inputs = None,
    output_dir: Annotated[
        Path, typer.Option("--output-dir", "-o", help="Where output files are downloaded.")
    ] = Path("."),
    url: ServerUrl = DEFAULT_URL,
    token: ApiToken = None,
) -> None:
    """Run a prediction on a deployment (or model) of an Ember server, streaming its output;
    output files are downloaded. Ctrl-C cancels it."""
    with connect(url, token) as client:
        _predict(client, name, inputs or [], output_dir)


def _predict(client: Client, ref: str, raw_inputs: list[str], output_dir: Path) -> None:
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
        raise CommandFailed(f"{exc}\n{owner}/{name}: {_inputs_hint(schema)}", 2) from None

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
            write(item)
            printed.append(bool(item))
        elif not _has_output_url(item):
            print_value(item)
            printed.append(False)

    try:
        final = follow(client, prediction, on_output, _write_logs, f"Running {owner}/{name}")
    except KeyboardInterrupt:
        client.post(prediction["urls"]["cancel"])
        raise CommandFailed(f"canceled prediction {prediction['id']}", 130) from None
    if concatenates and any(printed):
        write("\n")

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


def write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def follow(
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


def _write_logs(text: str) -> None:
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
