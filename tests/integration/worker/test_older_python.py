"""A model that asks for Python 3.10 (the oldest Cog supports) runs: the worker and the `cog`
shim, which run inside the model's environment, use nothing newer (they once used
`enum.StrEnum` and `asyncio.timeout`, 3.11+, and every 3.10 model failed to load)."""

from __future__ import annotations

import glob
import os
import shutil
from pathlib import Path

import pytest

from ember.runtime.local import LocalRuntime
from tests.support.paths import model_path
from tests.support.replicas import run_once


def _python310() -> str | None:
    found = shutil.which("python3.10")
    candidates = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.10*/bin/python3.10")))
    if candidates:  # pyenv's shim on PATH answers only for its selected version
        return candidates[-1]
    return found


@pytest.mark.skipif(_python310() is None, reason="no Python 3.10 on this machine for uv to use")
def test_a_python_3_10_model_runs(runtime: LocalRuntime, monkeypatch: pytest.MonkeyPatch) -> None:
    interpreter = _python310()
    assert interpreter is not None
    monkeypatch.setenv("PATH", f"{Path(interpreter).parent}{os.pathsep}{os.environ['PATH']}")
    run = run_once(runtime, model_path("cog", "python310"), input={"text": "hi"})
    assert run.result.status == "succeeded", run.result.error
    assert run.outputs == ["hi on 3.10", "async too"]
