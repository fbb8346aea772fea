"""Cog packages, unchanged: cog.yaml + predict.py written for Cog 0.16 (and 0.17+ names).

There is no Docker here, so `build` is honoured as far as a virtual environment can honour
it: Python requirements go into a uv environment; system packages are checked and reported
when missing; `build.run` commands are reported as not executed.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Callable
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

# Cog's deny list for `environment:` (pkg/config/env.go): names its build or runtime sets
# itself. A trailing `*` is a prefix. `COG_*` and `LD_PRELOAD` are allowed: Cog documents
# COG_SETUP_TIMEOUT, COG_STREAM_HISTORY_CAPACITY... as settings a model may give.
_DENIED_ENV_PATTERNS = (
    "PATH",
    "LD_LIBRARY_PATH",
    "PYTHONPATH",
    "VIRTUAL_ENV",
    "PYTHONUNBUFFERED",
    "R8_*",
    "REPLICATE_*",
    "LIBRARY_PATH",
    "CUDA_*",
    "NVIDIA_*",
    "NV_*",
    "PGET_*",
    "HF_ENDPOINT",
    "HF_HUB_ENABLE_HF_TRANSFER",
    "KUBERNETES_*",
)
#: The oldest Python Cog builds for (pkg/config: MinimumMajorPythonVersion/MinorPythonVersion).
MINIMUM_PYTHON = (3, 10)


def _env_name_denied(name: str) -> bool:
    """Whether Cog refuses ``name``: an exact match or a ``PREFIX*`` pattern, as env.go does."""
    return any(
        name.startswith(pattern[:-1]) if pattern.endswith("*") else name == pattern
        for pattern in _DENIED_ENV_PATTERNS
    )


def _parse_environment(root: Path, entries: list[str]) -> dict[str, str]:
    """cog.yaml's `environment:` as a dict, refused with Cog's own messages where Cog refuses.

    Cog's wording is kept so tooling that matches Cog's errors (its integration tests) works.
    """
    environment: dict[str, str] = {}
    for entry in entries:
        key, sep, value = str(entry).partition("=")
        if not sep or not key:
            raise PackageError(
                f"{root / MANIFEST}: environment variable {str(entry)!r} is not in the "
                "KEY=VALUE format"
            )
        if _env_name_denied(key):
            raise PackageError(
                f'{root / MANIFEST}: environment variable "{key}" is not allowed: reserved for '
                "internal use"
            )
        if key in environment:
            raise PackageError(
                f'{root / MANIFEST}: environment variable "{key}" is already defined'
            )
        environment[key] = value
    return environment


def _python_version(root: Path, build: dict[str, Any]) -> str | None:
    """``build.python_version`` validated as Cog validates it (pkg/config/validate.go).

    Refused here, before any environment is built, with Cog's message, so a model that Cog would
    not build is not quietly served on another Python.
    """
    raw = build.get("python_version")
    if raw is None or str(raw).strip() == "":
        return None
    # Unquoted `python_version: 3.10` is the YAML float 3.1; Go's YAML (Cog) keeps the text.
    version = "3.10" if raw == 3.1 and isinstance(raw, float) else str(raw).strip()
    parts = version.split(".", 2)

    def invalid(message: str) -> PackageError:
        return PackageError(
            f'{root / MANIFEST}: invalid build.python_version "{version}": {message}'
        )

    if len(parts) < 2:
        raise invalid("must include major and minor version (e.g., '3.11')")
    if not parts[0].isdigit():
        raise invalid("invalid major version number")
    if not parts[1].isdigit():
        raise invalid("invalid minor version number")
    if (int(parts[0]), int(parts[1])) < MINIMUM_PYTHON:
        raise invalid("minimum supported Python version is {}.{}".format(*MINIMUM_PYTHON))
    return version


def _resolve_local_requirement(root: Path, line: str) -> str:
    """A requirement naming a relative path (``./dist/pkg.zip``) made absolute in the package.

    uv builds in a temporary folder, where a relative path finds nothing; Cog resolves it
    against the folder holding cog.yaml, and so does this. Paths may contain spaces.
    """
    for flag in ("-r ", "--requirement ", "-c ", "--constraint "):
        if line.startswith(flag):  # a file named by a file: always relative to the package
            named = Path(line[len(flag) :].strip())
            return flag + str(named if named.is_absolute() else (root / named).resolve())
    prefix = ""
    rest = line
    for flag in ("-e ", "--editable "):
        if rest.startswith(flag):
            prefix, rest = flag, rest[len(flag) :].strip()
    if rest.startswith(("./", "../")) or rest in (".", ".."):
        return prefix + str((root / rest).resolve())
    return line


def read_spec(root: Path) -> PackageSpec:
    config = read_manifest(root / MANIFEST)
    build = config.get("build") or {}
    target = config.get("predict") or config.get("run")
    if not target:
        raise PackageError(
            f"{root / MANIFEST} has no `predict:` (or Cog 0.17 `run:`) entry, "
            'e.g. predict: "predict.py:Predictor"'
        )
    python_version = _python_version(root, build)
    if build.get("python_requirements"):
        requirements = [
            _resolve_local_requirement(root, line)
            for line in read_requirements(root, str(build["python_requirements"]))
        ]
    else:
        requirements = [str(p) for p in build.get("python_packages") or []]
    concurrency = (config.get("concurrency") or {}).get("max", 1)
    return PackageSpec(
        name=config.get("image", "").rsplit("/", 1)[-1] or root.resolve().name,
        format="cog",
        root=str(root),
        predictor=str(target),
        python_version=python_version,
        # Cog's runtime depends on requests, so models import it without listing it.
        requirements=requirements
        + (
            ["requests>=2,<3"]
            if requirements and not any(r.startswith("requests") for r in requirements)
            else []
        ),
        system_packages=[str(p) for p in build.get("system_packages") or []],
        environment=_parse_environment(root, config.get("environment") or []),
        resources=Resources(gpu=GpuSpec(type="any") if build.get("gpu") else None),
        max_concurrency=concurrency,  # checked by the spec: a whole number, within bounds
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
    timeout = _setup_timeout()
    if timeout is not None:
        predictor.setup = _bounded_setup(predictor.setup, timeout)
    declared = getattr(predictor.predict, "__cog_concurrency__", None)
    env_override = os.environ.get("COG_MAX_CONCURRENCY")
    predictor.max_concurrency = int(env_override or declared or spec.max_concurrency)
    if predictor.max_concurrency > 1 and not is_async_callable(predictor.predict):
        raise PredictorError(
            f"concurrency.max is {predictor.max_concurrency}, but {method}() is not async: "
            f"Cog runs concurrent predictions only for `async def {method}`"
        )
    return predictor


def _setup_timeout() -> int | None:
    """COG_SETUP_TIMEOUT in seconds, read as coglet reads it: a positive integer, else none."""
    raw = os.environ.get("COG_SETUP_TIMEOUT", "").strip()
    return int(raw) if raw.isdigit() and int(raw) > 0 else None


class SetupTimeout(Exception):
    """setup() ran past COG_SETUP_TIMEOUT; the replica ends SETUP_FAILED, as under Cog."""


def _bounded_setup(setup: Callable[[], Any], seconds: int) -> Callable[[], Any]:
    """``setup`` interrupted after ``seconds``: a model that sets COG_SETUP_TIMEOUT in cog.yaml
    expects a stuck setup to fail rather than hold the replica in STARTING forever.

    A synchronous setup is interrupted with SIGALRM (the worker runs it on the main thread,
    so sleeps and blocking calls are broken off); an async one is bounded by
    ``asyncio.wait_for``.
    """
    message = f"setup() did not finish within COG_SETUP_TIMEOUT={seconds}s"

    def on_alarm(signum: int, frame: Any) -> None:
        raise SetupTimeout(message)

    async def bounded(awaitable: Any) -> Any:
        try:
            return await asyncio.wait_for(awaitable, seconds)
        # asyncio's own name: a Cog model env may run Python 3.10, where it is not TimeoutError.
        except asyncio.TimeoutError:  # noqa: UP041
            raise SetupTimeout(message) from None

    def timed() -> Any:
        if threading.current_thread() is not threading.main_thread():
            result = setup()
        else:
            previous = signal.signal(signal.SIGALRM, on_alarm)
            signal.setitimer(signal.ITIMER_REAL, seconds)
            try:
                result = setup()
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, previous)
        return bounded(result) if inspect.isawaitable(result) else result

    return timed


def _overrides_run(cls: type) -> bool:
    """True when a BaseRunner subclass (Cog 0.17+) defines run() rather than predict()."""
    from cog import BasePredictor  # the shim; imported late because it is on sys.path now

    run = getattr(cls, "run", None)
    predict = getattr(cls, "predict", None)
    return run is not None and (predict is None or predict is BasePredictor.predict)
