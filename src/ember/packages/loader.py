"""Find out which format a package folder is in, read its spec, load its predictor."""

from __future__ import annotations

from pathlib import Path

from ember.packages import cog, engines, native, truss
from ember.packages.predictor import Predictor
from ember.packages.spec import PackageError, PackageSpec, package_file

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
    spec = _FORMATS[detect_format(root)].read_spec(root)
    if spec.engine is not None:
        return spec
    package_file(root, spec.predictor_parts()[0], "predictor file")
    return spec


def load_predictor(spec: PackageSpec) -> Predictor:
    """Import the predictor (inside the replica) and describe it."""
    if spec.engine is not None:
        return engines.load(spec)
    return _FORMATS[spec.format].load(spec)
