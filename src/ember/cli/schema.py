"""`ember schema`: a package's OpenAPI schema, from a replica started on this machine (the
schema is what the package's code declares, so it takes a running replica to know it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from ember.cli.local_run import run_guarded, start_replica
from ember.cli.options import DataDir, examples
from ember.packages.loader import read_package
from ember.runtime.local import LocalRuntime, default_data_dir

app = typer.Typer()


@app.command(epilog=examples("ember schema ./hello | jq .components.schemas.Input"))
def schema(
    path: Annotated[Path, typer.Argument(help="Package folder (ember.yaml, cog.yaml or Truss).")],
    data_dir: DataDir = default_data_dir(),
) -> None:
    """Print a package's OpenAPI schema (Cog's shape: Input, Output, x-order, enums)."""
    document = run_guarded(package_schema(path, data_dir))
    print(json.dumps(document, indent=2))


async def package_schema(path: Path, data_dir: Path) -> dict[str, Any]:
    spec = read_package(path)
    replica = await start_replica(LocalRuntime(data_dir), spec)
    try:
        assert replica.schema is not None
        return replica.schema
    finally:
        await replica.stop()
