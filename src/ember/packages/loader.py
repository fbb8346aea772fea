"""Find out which format a package folder is in, read its spec, load its predictor."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from ember.packages import cog, engines, native, truss
from ember.packages.predictor import Predictor
from ember.packages.spec import (
    MAX_SPEC_BYTES,
    PackageError,
    PackageSpec,
    describe_errors,
    package_file,
)

_FORMATS = {"ember": native, "cog": cog, "truss": truss}


def detect_format(root: Path) -> str:
    """ember.yaml wins over cog.yaml, which wins over a Truss config.yaml."""
    if (root / native.MANIFEST).is_file():
        return "ember"
    if (root / cog.MANIFEST).is_file():
        return "cog"
    if (root / truss.MANIFEST).is_file() and (root / "model").is_dir():
        return "truss"
    raise PackageError(
        f"{root} is not a model package: expected ember.yaml, cog.yaml, "
        "or a Truss config.yaml with a model/ folder"
    )


def read_package(path: str | Path) -> PackageSpec:
    """Read a package's spec, checking what can be checked without importing its code."""
    root = Path(path).expanduser().resolve()
    if not root.is_dir():
        raise PackageError(f"{path} is not a folder")
    reader = _FORMATS[detect_format(root)]
    try:
        spec = reader.read_spec(root)
    except ValidationError as exc:  # a Cog or Truss value the spec does not accept
        raise PackageError(f"{root / reader.MANIFEST} is invalid:\n{describe_errors(exc)}") from exc
    size = len(spec.model_dump_json().encode())
    if size > MAX_SPEC_BYTES:  # it could not reach a replica
        raise PackageError(
            f"{root}'s settings come to {size // 1024} KiB, more than {MAX_SPEC_BYTES // 1024} "
            "KiB: shorten its requirements, environment or options"
        )
    if spec.engine is not None:
        return spec
    package_file(root, spec.predictor_parts()[0], "predictor file")
    return spec


def load_predictor(spec: PackageSpec) -> Predictor:
    """Import the predictor (inside the replica) and describe it."""
    if spec.engine is not None:
        return engines.load(spec)
    return _FORMATS[spec.format].load(spec)
