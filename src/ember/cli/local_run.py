"""`ember run`: one replica of a package on this machine, like `cog predict`.

Builds (or reuses) the package's environment with a live display of uv's progress, starts a
replica, streams logs to stderr and output to stdout as it is produced, and writes output
files into a folder. `ember schema` starts a replica the same way.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.live import Live
from rich.spinner import Spinner
from rich.text import Text

from ember.cli.console import err, out
from ember.cli.inputs import InputSyntaxError, parse_inputs
from ember.cli.options import DataDir, Inputs, examples, fail
from ember.packages.environment import EnvironmentBuildError, MissingSystemPackages
from ember.packages.loader import read_package
from ember.packages.spec import PackageError, PackageSpec
from ember.runtime.base import PredictionRequest, PredictionResult, ReplicaState, replace_files
from ember.runtime.local import LocalRuntime, default_data_dir
from ember.runtime.local_replica import LocalReplica
from ember.worker.outputs import FILE_KEY

T = TypeVar("T")

app = typer.Typer()


@app.command(
    epilog=examples(
        "ember run ./blur -i image=@cat.png -i blur=3  # writes the blurred image here",
        "ember run ./hello -i name=Ada -o out/ --timeout 60",
    )
)
def run(
    path: Annotated[Path, typer.Argument(help="Package folder (ember.yaml, cog.yaml or Truss).")],
    inputs: Inputs = None,
    output_dir: Annotated[
        Path, typer.Option("--output-dir", "-o", help="Where output files are written.")
    ] = Path("."),
    timeout: Annotated[
        float | None, typer.Option(help="Seconds the prediction may run before it is stopped.")
    ] = None,
    data_dir: DataDir = default_data_dir(),
) -> None:
    """Run one prediction of a package locally, in its own replica (like `cog predict`)."""
    run_guarded(run_prediction(path, inputs or [], output_dir, data_dir, timeout))


class RunFailed(Exception):
    """The run ended badly; `code` is the exit status (1: prediction failed, 2: bad input)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def run_guarded(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine, turning Ember's expected errors into messages and exit codes."""
    try:
        return asyncio.run(coroutine)
    except (PackageError, InputSyntaxError) as exc:
        raise fail(str(exc), 2) from None
    except MissingSystemPackages as exc:
        raise fail(str(exc), 2) from None
    except EnvironmentBuildError as exc:
        raise fail(f"{exc}\n\n{exc.log_tail}") from None
    except RunFailed as exc:
        raise fail(str(exc), exc.code) from None


async def _with_spinner(title: str, work: Callable[[Callable[[str], None]], Awaitable[T]]) -> T:
    """Run `work(report)` under a spinner whose caption shows the latest reported line."""
    spinner = Spinner("dots", text=Text(title, style="bold"))
    with Live(spinner, console=err, transient=True, refresh_per_second=12):

        def report(line: str) -> None:
            spinner.update(text=Text.assemble((title, "bold"), "  ", (line.strip()[:100], "dim")))

        return await work(report)


async def start_replica(runtime: LocalRuntime, spec: PackageSpec) -> LocalReplica:
    """Environment, then replica, each with a progress display; raises RunFailed on failure."""
    extra = f" ({len(spec.requirements)} requirements)" if spec.requirements else ""
    environment = await _with_spinner(
        f"Preparing environment{extra}", lambda report: runtime.prepare(spec, report)
    )
    if not environment.shared_with_ember:
        err.print(f"[dim]environment {environment.key[:12]} at {environment.root}[/dim]")
    replica: LocalReplica = await _with_spinner(
        f"Setting up {spec.name}", lambda report: _start(runtime, spec)
    )
    if replica.state != ReplicaState.READY:
        if replica.setup_logs.strip():
            err.print(Text(replica.setup_logs.rstrip(), style="dim"))
        raise RunFailed(f"setup of {spec.name} failed:\n{replica.setup_error or 'no details'}")
    timings = ", ".join(f"{k.removesuffix('_time')} {v:.2f}s" for k, v in replica.timings.items())
    err.print(f"[green]✓[/green] {spec.name} ready [dim]({timings})[/dim]")
    return replica


async def _start(runtime: LocalRuntime, spec: PackageSpec) -> LocalReplica:
    replica = await runtime.start_replica(spec)
    await replica.wait_started()
    return replica


def output_kind(schema: dict[str, Any] | None) -> tuple[bool, bool]:
    """(streams?, concatenates?) from the Output component."""
    output = (schema or {}).get("components", {}).get("schemas", {}).get("Output", {})
    streams = output.get("x-cog-array-type") == "iterator"
    return streams, output.get("x-cog-array-display") == "concatenate"


def _save_files(result: PredictionResult, output_dir: Path) -> Any:
    """Copy output files into output_dir (never overwriting) and return the output with paths."""

    def save(path: Path) -> str:
        output_dir.mkdir(parents=True, exist_ok=True)
        target, n = output_dir / path.name, 1
        while target.exists():
            target = output_dir / f"{path.stem}-{n}{path.suffix}"
            n += 1
        shutil.copyfile(path, target)
        return str(target)

    assert result.files_dir is not None
    return replace_files(result.output, save, result.files_dir)


def print_value(value: Any) -> None:
    if isinstance(value, str):
        out.print(value, markup=False, highlight=False, soft_wrap=True)
    else:
        out.print_json(json.dumps(value))


async def run_prediction(
    path: Path, raw_inputs: list[str], output_dir: Path, data_dir: Path, timeout: float | None
) -> PredictionResult:
    spec = read_package(path)
    runtime = LocalRuntime(data_dir)
    replica = await start_replica(runtime, spec)
    try:
        inputs = parse_inputs(raw_inputs, replica.schema)
        request = PredictionRequest(
            id=f"run-{uuid.uuid4().hex[:12]}", input=inputs, timeout=timeout or spec.timeout
        )
        handle = replica.submit(request)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, handle.cancel)
        streams, concatenates = output_kind(replica.schema)
        async for event in handle.events():
            if event.type == "log":
                err.print(Text(event.data, style="dim"), end="")
            elif event.type == "output" and not _has_file(event.data):
                if concatenates:
                    out.print(event.data, end="", markup=False, highlight=False)
                else:
                    print_value(event.data)
        loop.remove_signal_handler(signal.SIGINT)
        result = await handle.result()
        if concatenates:
            out.print()
        if result.status == "succeeded":
            output = _save_files(result, output_dir)
            if not streams or _has_file(result.output):
                print_value(output)
            err.print(f"[dim]predict_time {result.metrics.get('predict_time', 0):.3f}s[/dim]")
        elif result.status == "canceled":
            raise RunFailed("prediction canceled", code=130)
        elif result.validation_errors:
            details = "\n".join(
                f"  {'.'.join(map(str, e['loc'][1:]))}: {e['msg']}"
                for e in result.validation_errors
            )
            raise RunFailed(
                f"invalid input:\n{details}\nSee the inputs with: ember schema {path}", 2
            )
        else:
            raise RunFailed(f"prediction failed: {result.error}")
        return result
    finally:
        await replica.stop()


def _has_file(value: Any) -> bool:
    if isinstance(value, dict):
        return FILE_KEY in value or any(_has_file(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_file(v) for v in value)
    return False
