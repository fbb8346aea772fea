"""A package asking for another Python than Ember's gets an environment on that Python, even
without requirements; a Python that is not installed is a clear error, never a download.

Uses the real uv and whatever Pythons this machine has (pyenv's through PYENV_VERSION)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ember.packages.environment import EnvironmentBuildError, ensure_environment

RUNNING = (sys.version_info.major, sys.version_info.minor)
PYENV_ROOT = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))


def other_installed_python() -> tuple[str, str] | None:
    """(minor version, pyenv version name) of an installed Python >= 3.10 other than ours."""
    versions = PYENV_ROOT / "versions"
    if not versions.is_dir() or not shutil.which("pyenv"):
        return None
    for folder in sorted(versions.iterdir()):
        parts = folder.name.split(".")
        if len(parts) == 3 and all(p.isdigit() for p in parts):
            minor = (int(parts[0]), int(parts[1]))
            if minor >= (3, 10) and minor != RUNNING:
                return f"{parts[0]}.{parts[1]}", folder.name
    return None


def test_other_python_gets_its_own_environment_without_requirements(tmp_path, monkeypatch):
    other = other_installed_python()
    if other is None:
        pytest.skip("no second Python >= 3.10 installed through pyenv")
    version, pyenv_name = other
    running = ".".join(map(str, sys.version_info[:3]))
    monkeypatch.setenv("PYENV_VERSION", f"{running}:{pyenv_name}")
    env = ensure_environment([], cache_dir=tmp_path / "envs", python_version=version)

    assert not env.shared_with_ember
    out = subprocess.run(
        [
            str(env.python),
            "-c",
            "import sys, pydantic; print(sys.version_info[:2], pydantic.VERSION)",
        ],
        capture_output=True,
        text=True,
        check=True,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    ).stdout
    major, minor = version.split(".")
    assert out.startswith(f"({major}, {minor})")  # the Python asked for, with the worker runtime


def test_same_python_without_requirements_still_shares_embers_interpreter(tmp_path):
    running = f"{sys.version_info.major}.{sys.version_info.minor}"
    env = ensure_environment([], cache_dir=tmp_path / "envs", python_version=running)
    assert env.shared_with_ember
    assert not (tmp_path / "envs").exists()


def test_missing_python_is_named_and_never_downloaded(tmp_path):
    with pytest.raises(EnvironmentBuildError) as caught:
        ensure_environment([], cache_dir=tmp_path / "envs", python_version="3.99")
    message = str(caught.value)
    assert "Python 3.99" in message
    assert "never downloads Python" in message
