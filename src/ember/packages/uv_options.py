"""What uv is told besides the command itself: the user's pip configuration as uv flags, Ember's
wheelhouse, and the environment variables a build runs uv with.

``uv`` does not read pip's configuration, yet the user's pip configuration (mirrors, a local
find-links folder with CPU wheels, ...) is what decides whether an install takes seconds or pulls
gigabytes of CUDA wheels, so it is translated into uv flags by :func:`uv_index_args`.
Ember's own wheelhouse (``EMBER_WHEELHOUSE``, default ``~/.cache/ember/wheels``), where
``scripts/wheels.sh`` puts portable builds of source-only packages such as llama-cpp-python, is
offered too: uv would otherwise compile them for the building CPU.

It is kept apart from the build (``environment.py``) because it is also what the benchmarks use
to install their peers with the same indexes, and because reading pip's layered configuration
is a subject of its own.
"""

from __future__ import annotations

import ast
import configparser
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

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


def pip_options(pip_config: Mapping[str, str] | None) -> dict[str, str]:
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


def uv_args_from_options(options: Mapping[str, str]) -> list[str]:
    """``uv pip install`` flags for pip options as :func:`pip_options` collapses them."""
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
    return uv_args_from_options(pip_options(pip_config))


def wheelhouse() -> Path:
    """Ember's folder of wheels built here for packages PyPI has only as source."""
    return Path(os.environ.get("EMBER_WHEELHOUSE") or Path.home() / ".cache/ember/wheels")


def wheelhouse_args() -> list[str]:
    """``--find-links`` to the wheelhouse, when it holds any wheel."""
    folder = wheelhouse()
    return ["--find-links", str(folder)] if any(folder.glob("*.whl")) else []


def uv_environment(cache_dir: Path, options: Mapping[str, str]) -> dict[str, str]:
    """The environment variables uv builds with: a shared cache beside the environments, never a
    downloaded Python, and pip's ``cert`` and ``timeout`` where uv has no flag for them."""
    env = dict(os.environ)
    if not env.get("UV_CACHE_DIR"):
        # Beside the environments (same filesystem, so uv can hardlink instead of copying), and
        # shared by all builds so each wheel is downloaded once.
        env["UV_CACHE_DIR"] = str(cache_dir / "uv-cache")
    env["UV_PYTHON_DOWNLOADS"] = "never"
    env["UV_NO_PROGRESS"] = "1"
    env.pop("VIRTUAL_ENV", None)  # we always name the target explicitly
    cert = options.get("cert", "").strip()
    if cert and os.path.isfile(cert) and not env.get("SSL_CERT_FILE"):
        env["SSL_CERT_FILE"] = cert  # pip trusts this CA bundle (e.g. a corporate proxy's)
    timeout = (options.get("timeout") or options.get("default-timeout") or "").strip()
    if timeout and not env.get("UV_HTTP_TIMEOUT"):
        env["UV_HTTP_TIMEOUT"] = timeout
    return env
