"""Tests for model environments built with uv.

These use the real uv binary and build real virtual environments; requirements are resolved
through this machine's pip configuration, which uv_index_args translates for uv.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ember.packages.environment import (
    BUILD_LOG_NAME,
    MARKER_NAME,
    EnvironmentBuildError,
    MissingSystemPackages,
    check_system_packages,
    ensure_environment,
    require_system_packages,
)
from ember.packages.environment_cache import environment_key
from ember.packages.uv_options import uv_index_args
from tests.support.paths import ROOT

RUNNING = f"{sys.version_info.major}.{sys.version_info.minor}"
EMBER_PACKAGE_DIR = ROOT / "src" / "ember"


def run_in_env(python: Path, code: str) -> dict:
    """Run ``code`` in the environment's interpreter without inheriting our PYTHONPATH.

    The test process runs with PYTHONPATH=src; passing that on would make `import ember` work
    through PYTHONPATH and hide a broken .pth file.
    """
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME"}}
    proc = subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, env=env, check=True
    )
    return json.loads(proc.stdout)


# ------------------------------------------------------------------------------ uv_index_args


def test_uv_index_args_translates_pip_config():
    args = uv_index_args(
        {
            "global.index-url": "https://mirror.example/simple",
            "global.extra-index-url": "file:///opt/pypi/simple file:///opt/pypi-more/simple",
            "global.find-links": "/opt/wheels",
        }
    )
    assert args == [
        "--index-url", "https://mirror.example/simple",
        "--extra-index-url", "file:///opt/pypi/simple",
        "--extra-index-url", "file:///opt/pypi-more/simple",
        "--find-links", "/opt/wheels",
        "--index-strategy", "unsafe-best-match",
    ]  # fmt: skip


def test_uv_index_args_follows_pip_precedence_and_options():
    # [install] beats [global]; environment (:env:) beats both; values may be newline-separated.
    args = uv_index_args(
        {
            "global.index-url": "https://global.example/simple",
            "install.index-url": "https://install.example/simple",
            ":env:.index-url": "https://env.example/simple",
            "install.find-links": "/a\n/b",
            "global.trusted-host": "env.example",
        }
    )
    assert args == [
        "--index-url", "https://env.example/simple",
        "--find-links", "/a",
        "--find-links", "/b",
        "--allow-insecure-host", "env.example",
        "--index-strategy", "unsafe-best-match",
    ]  # fmt: skip
    # no-index drops every index but keeps find-links, like pip.
    assert uv_index_args(
        {"index-url": "https://x.example/simple", "no-index": "true", "find-links": "/w"}
    ) == ["--no-index", "--find-links", "/w", "--index-strategy", "unsafe-best-match"]
    # A single index needs no index strategy: uv's default behaves like pip there.
    assert uv_index_args({"index-url": "https://x.example/simple"}) == [
        "--index-url",
        "https://x.example/simple",
    ]
    assert uv_index_args({}) == []


def test_uv_index_args_reads_pip_and_environment(monkeypatch, tmp_path):
    # Real `pip config list`, isolated from this machine's config files; PIP_* variables win.
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    for name in ("PIP_INDEX_URL", "PIP_NO_INDEX", "PIP_TRUSTED_HOST"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "file:///x/simple file:///y/simple")
    monkeypatch.setenv("PIP_FIND_LINKS", "wheels")  # relative: resolved against our cwd
    monkeypatch.chdir(tmp_path)
    assert uv_index_args() == [
        "--extra-index-url", "file:///x/simple",
        "--extra-index-url", "file:///y/simple",
        "--find-links", str(tmp_path / "wheels"),
        "--index-strategy", "unsafe-best-match",
    ]  # fmt: skip


# ---------------------------------------------------------------------------- environment_key


def test_environment_key_ignores_order_comments_and_blank_lines():
    a = environment_key(["torch==2.13.0", "pillow==13.0.0"], "3.11")
    b = environment_key(
        ["# model deps", "", "pillow==13.0.0   # images", "  torch==2.13.0  "], "3.11"
    )
    assert a == b
    assert len(a) == 64 and int(a, 16) >= 0


def test_environment_key_changes_with_requirements_and_python():
    base = environment_key(["pillow==13.0.0"], "3.11")
    assert base != environment_key(["pillow==12.3.0"], "3.11")
    assert base != environment_key(["pillow==13.0.0", "numpy"], "3.11")
    assert base != environment_key(["pillow==13.0.0"], "3.12")
    # A URL fragment is not a comment.
    assert environment_key(["pkg @ https://x.example/p.whl#sha256=ab"], "3.11") != (
        environment_key(["pkg @ https://x.example/p.whl"], "3.11")
    )


# --------------------------------------------------------------------------- ensure_environment


def test_no_requirements_runs_in_embers_own_interpreter(tmp_path):
    progress: list[str] = []
    env = ensure_environment(
        ["# nothing but a comment", ""], cache_dir=tmp_path / "envs", on_progress=progress.append
    )
    assert env.shared_with_ember
    assert env.python == Path(sys.executable)
    assert env.root == Path(sys.prefix)
    assert progress == []
    assert not (tmp_path / "envs").exists()  # nothing built, nothing written


def test_builds_isolated_environment_and_reuses_it(tmp_path, monkeypatch):
    monkeypatch.delenv("UV_CACHE_DIR", raising=False)
    cache_dir = tmp_path / "envs"
    progress: list[str] = []
    env = ensure_environment(["pillow==13.0.0"], cache_dir=cache_dir, on_progress=progress.append)

    assert not env.shared_with_ember
    assert env.key == environment_key(["pillow==13.0.0"], RUNNING)
    assert env.root == cache_dir / env.key
    assert env.python == env.root / "bin" / "python"
    assert (env.root / MARKER_NAME).is_file()
    assert any("pillow==13.0.0" in line for line in progress)  # uv's output was streamed
    assert "pillow==13.0.0" in (env.root / BUILD_LOG_NAME).read_text()
    assert (cache_dir / "uv-cache").is_dir()  # wheels cached beside the environments

    probe = (
        "import importlib.util as u, json, PIL, ember, pydantic, yaml;"
        "print(json.dumps({'pil': PIL.__version__, 'ember': list(ember.__path__),"
        "'pydantic': pydantic.VERSION, 'yaml': yaml.__version__,"
        "'leaked': [m for m in ('rich', 'typer', 'httpx') if u.find_spec(m)]}))"
    )
    seen = run_in_env(env.python, probe)
    assert seen["pil"] == "13.0.0"
    assert seen["ember"] == [str(env.root / "ember-path" / "ember")]  # via _ember.pth
    assert seen["leaked"] == []  # Ember's own dependencies are not visible
    assert seen["pydantic"].startswith("2.")  # worker runtime range pydantic>=2.7,<3
    assert seen["yaml"].split(".")[0] in ("5", "6")

    # Second call: cached, no build output at all.
    again: list[str] = []
    assert (
        ensure_environment(["pillow==13.0.0"], cache_dir=cache_dir, on_progress=again.append) == env
    )
    assert again == []

    # If Ember moved since the build, the cached environment's ember link is repaired.
    link = env.root / "ember-path" / "ember"
    link.unlink()
    link.symlink_to(tmp_path)
    ensure_environment(
        ["# same deps", "pillow==13.0.0"], cache_dir=cache_dir, on_progress=again.append
    )
    assert again == []
    assert link.resolve() == EMBER_PACKAGE_DIR.resolve()


def test_failed_build_reports_uv_output_and_leaves_no_environment(tmp_path):
    cache_dir = tmp_path / "envs"
    requirements = ["ember-no-such-package-xyz==1.0"]
    with pytest.raises(EnvironmentBuildError) as caught:
        ensure_environment(requirements, cache_dir=cache_dir)
    error = caught.value
    assert "ember-no-such-package-xyz" in error.log_tail
    assert "run again" in str(error)
    assert error.log_path is not None and "ember-no-such-package-xyz" in error.log_path.read_text()

    key = environment_key(requirements, RUNNING)
    assert not (cache_dir / key).exists()
    leftovers = [p.name for p in cache_dir.iterdir() if p.name.startswith(f".{key}")]
    assert leftovers == []  # the temporary build directory was removed


def test_concurrent_builders_build_once(tmp_path):
    cache_dir = tmp_path / "envs"
    cache_dir.mkdir()
    requirements = ["six"]
    key = environment_key(requirements, RUNNING)
    # Leftovers of a crashed build: must not be used, and must be cleaned up.
    (cache_dir / f".{key}.tmp-crashed").mkdir()
    (cache_dir / key).mkdir()  # no completion marker

    progress: list[list[str]] = [[], []]
    results: list = [None, None]

    def build(i: int) -> None:
        results[i] = ensure_environment(
            requirements, cache_dir=cache_dir, on_progress=progress[i].append
        )

    # Hold the build lock so both builders are guaranteed to contend for it.
    with open(cache_dir / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        threads = [threading.Thread(target=build, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while not all(any("Waiting" in line for line in p) for p in progress):
            assert time.monotonic() < deadline, progress
            time.sleep(0.02)
        fcntl.flock(lock, fcntl.LOCK_UN)
    for thread in threads:
        thread.join(timeout=120)

    assert results[0] == results[1] and results[0] is not None
    builds = [line for p in progress for line in p if "Creating virtual environment" in line]
    assert len(builds) == 1
    assert (cache_dir / key / MARKER_NAME).is_file()
    assert not (cache_dir / f".{key}.tmp-crashed").exists()
    assert run_in_env(results[0].python, "import json, six; print(json.dumps(six.PY3))") is True


# ---------------------------------------------------------------------------- system packages


def test_check_system_packages_reports_only_missing():
    assert check_system_packages(["coreutils", "ember-no-such-pkg"]) == ["ember-no-such-pkg"]


def test_missing_system_packages_tells_how_to_install():
    with pytest.raises(MissingSystemPackages) as caught:
        require_system_packages(["coreutils", "ember-no-such-pkg", "ember-no-such-pkg2"])
    assert caught.value.missing == ["ember-no-such-pkg", "ember-no-such-pkg2"]
    assert "apt-get install -y ember-no-such-pkg ember-no-such-pkg2" in str(caught.value)
    assert "container" in str(caught.value)
