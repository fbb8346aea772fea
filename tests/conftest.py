"""Fixtures every layer's tests share: a real local runtime whose model environments are built
once per run, an admin client of a module's real `ember serve`, and the markers that let a
developer leave out the suites that need more than Python and SQLite."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ember.runtime.local import LocalRuntime
from tests.support.paths import EXAMPLES, MODELS
from tests.support.server import EmberServer

# One uv cache for every server and runtime the tests start (and for the next run on this
# machine): torch for the embeddings engine is unpacked once, then hardlinked.
os.environ.setdefault("UV_CACHE_DIR", str(Path.home() / ".cache" / "ember" / "uv"))


@pytest.fixture(scope="module")
def api(server: EmberServer) -> Iterator[httpx.Client]:
    """An admin client of the module's `ember serve` (each module defines its `server`)."""
    with server.client() as client:
        yield client


@pytest.fixture(scope="session")
def ember_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data dir per test run, so uv environments (e.g. pillow for blur) build once."""
    return tmp_path_factory.mktemp("ember-home")


@pytest.fixture
def runtime(ember_home: Path) -> LocalRuntime:
    return LocalRuntime(ember_home)


@pytest.fixture(autouse=True)
def _fresh_predictor_modules() -> Iterator[None]:
    """Loaders import predictors in-process too (schema tests): forget them between tests."""
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        module = sys.modules.get(name)
        origin = getattr(module, "__file__", "") or ""
        if origin.startswith((str(MODELS), str(EXAMPLES))):
            del sys.modules[name]


# Which suites need more than Python and SQLite (markers registered in pyproject.toml), so
# that e.g. `bash scripts/test.sh -m "not browser and not ray"` leaves them out: by folder,
# by module, and by the backend a test is parametrized with (tests.support.api's servers).
FOLDER_MARKS = {"browser": ("browser", "slow")}
MODULE_MARKS = {
    "test_ray_runtime.py": ("ray", "slow"),
    "test_load.py": ("slow",),
    "test_api_fuzz.py": ("slow",),
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        marks = MODULE_MARKS.get(item.path.name, ()) + FOLDER_MARKS.get(item.path.parent.name, ())
        for mark in marks:
            item.add_marker(mark)
        params = getattr(getattr(item, "callspec", None), "params", {})
        for backend in ("postgres", "ray"):
            if backend in params.values():
                item.add_marker(backend)
