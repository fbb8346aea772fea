"""Cog packages, unchanged: cog.yaml + predict.py written for Cog 0.16 (and 0.17+ names).

There is no Docker here, so `build` is honoured as far as a virtual environment can honour
it: Python requirements go into a uv environment; system packages are checked and reported
when missing; `build.run` commands are reported as not executed.
"""

from __future__ import annotations

import inspect
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from ember.packages.fetch import fetch
from ember.packages.importing import load_attribute
from ember.packages.native import read_requirements
from ember.packages.predictor import (
    Predictor,
    PredictorError,
    is_async_callable,
    predictor_from_target,
)
from ember.packages.spec import GpuSpec, PackageError, PackageSpec, Resources, read_manifest
from ember.types import Path as EmberPath

MANIFEST = "cog.yaml"
SHIMS = str(Path(__file__).parent / "shims")

# Cog refuses these in `environment:` because they would break the runtime.
_DENIED_ENV_PREFIXES = ("R8_", "REPLICATE_", "CUDA_", "NVIDIA_", "KUBERNETES_", "COG_")
_DENIED_ENV = {
    "PATH",
    "LD_LIBRARY_PATH",
    "PYTHONPATH",
    "VIRTUAL_ENV",
    "PYTHONUNBUFFERED",
    "LD_PRELOAD",
}


def _parse_environment(root: Path, entries: list[str]) -> dict[str, str]:
    environment: dict[str, str] = {}
    for entry in entries:
        key, sep, value = str(entry).partition("=")
        if not sep or not key:
            raise PackageError(f"{root / MANIFEST}: environment entry {entry!r} is not KEY=VALUE")
        if key in _DENIED_ENV or key.startswith(_DENIED_ENV_PREFIXES):
            raise PackageError(f"{root / MANIFEST}: environment variable {key} may not be set")
        environment[key] = value
    return environment


def read_spec(root: Path) -> PackageSpec:
    config = read_manifest(root / MANIFEST)
    build = config.get("build") or {}
    target = config.get("predict") or config.get("run")
    if not target:
        raise PackageError(
            f"{root / MANIFEST} has no `predict:` (or Cog 0.17 `run:`) entry, "
            'e.g. predict: "predict.py:Predictor"'
        )
    if build.get("python_requirements"):
        requirements = read_requirements(root, str(build["python_requirements"]))
    else:
        requirements = [str(p) for p in build.get("python_packages") or []]
    concurrency = (config.get("concurrency") or {}).get("max", 1)
    return PackageSpec(
        name=config.get("image", "").rsplit("/", 1)[-1] or root.resolve().name,
        format="cog",
        root=str(root),
        predictor=str(target),
        python_version=str(build["python_version"]) if build.get("python_version") else None,
        requirements=requirements,
        system_packages=[str(p) for p in build.get("system_packages") or []],
        environment=_parse_environment(root, config.get("environment") or []),
        resources=Resources(gpu=GpuSpec(type="any") if build.get("gpu") else None),
        max_concurrency=int(concurrency),
        options={"run_commands": [str(c) for c in build.get("run") or []]},
    )


def _weights() -> Any:
    """What Cog passes as setup(weights=...).

    COG_WEIGHTS (a URL or data URI) arrives as an open binary file, as Cog 0.16 hands it over;
    else a local ./weights file or folder as a Path; else None.
    """
    url = os.environ.get("COG_WEIGHTS")
    if url:
        folder = Path(tempfile.mkdtemp(prefix="ember-weights-"))
        return fetch(url, folder, "weights").open("rb")
    local = Path("weights")
    return EmberPath(local) if local.exists() else None


def _setup_kwargs(target: Any) -> dict[str, Any]:
    setup = getattr(target, "setup", None)
    if setup is None or "weights" not in inspect.signature(setup).parameters:
        return {}
    return {"weights": _weights()}


def load(spec: PackageSpec) -> Predictor:
    if SHIMS not in sys.path:
        sys.path.insert(0, SHIMS)
    target = load_attribute(spec)
    method = "run" if inspect.isclass(target) and _overrides_run(target) else "predict"
    predictor = predictor_from_target(spec, target, method, _setup_kwargs(target))
    declared = getattr(predictor.predict, "__cog_concurrency__", None)
    env_override = os.environ.get("COG_MAX_CONCURRENCY")
    predictor.max_concurrency = int(env_override or declared or spec.max_concurrency)
    if predictor.max_concurrency > 1 and not is_async_callable(predictor.predict):
        raise PredictorError(
            f"concurrency.max is {predictor.max_concurrency}, but {method}() is not async: "
            f"Cog runs concurrent predictions only for `async def {method}`"
        )
    return predictor


def _overrides_run(cls: type) -> bool:
    """True when a BaseRunner subclass (Cog 0.17+) defines run() rather than predict()."""
    from cog import BasePredictor  # the shim; imported late because it is on sys.path now

    run = getattr(cls, "run", None)
    predict = getattr(cls, "predict", None)
    return run is not None and (predict is None or predict is BasePredictor.predict)
