"""Shared fixtures: a real local runtime whose model environments are built once per run, and
an admin client of a module's real `ember serve`."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from server import EmberServer

from ember.control.access import Principal
from ember.control.deployments import Target
from ember.control.intake import Submission
from ember.control.platform import Platform
from ember.control.predictions import PredictionState
from ember.packages.loader import read_package
from ember.packages.spec import PackageSpec
from ember.runtime.base import PredictionEvent, PredictionRequest, PredictionResult, ReplicaState
from ember.runtime.local import LocalRuntime
from ember.runtime.local_replica import LocalReplica

MODELS = Path(__file__).parent / "models"
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


def model_path(kind: str, name: str) -> Path:
    return MODELS / kind / name


@dataclass
class Run:
    """What one prediction on a fresh replica produced."""

    result: PredictionResult
    events: list[PredictionEvent] = field(default_factory=list)
    replica: LocalReplica | None = None

    @property
    def outputs(self) -> list[Any]:
        return [e.data for e in self.events if e.type == "output"]


async def start(runtime: LocalRuntime, spec: PackageSpec | str | Path) -> LocalReplica:
    if not isinstance(spec, PackageSpec):
        spec = read_package(spec)
    replica = await runtime.start_replica(spec)
    state = await replica.wait_started()
    assert state == ReplicaState.READY, replica.setup_error
    return replica


async def predict(replica: LocalReplica, prediction_id: str = "p1", **request: Any) -> Run:
    handle = replica.submit(PredictionRequest(id=prediction_id, **request))
    events = [event async for event in handle.events()]
    return Run(await handle.result(), events, replica)


def run_once(runtime: LocalRuntime, path: str | Path, **request: Any) -> Run:
    """Start a replica of `path`, run one prediction, stop the replica."""

    async def go() -> Run:
        replica = await start(runtime, path)
        try:
            return await predict(replica, **request)
        finally:
            await replica.stop()

    return asyncio.run(go())


@pytest.fixture(autouse=True)
def _fresh_predictor_modules() -> Iterator[None]:
    """Loaders import predictors in-process too (schema tests): forget them between tests."""
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        module = sys.modules.get(name)
        origin = getattr(module, "__file__", "") or ""
        if str(MODELS) in origin or str(MODELS.parent.parent / "examples") in origin:
            del sys.modules[name]


async def submit(
    platform: Platform, target: Target, input: dict[str, Any], token_id: str | None = None
) -> PredictionState:
    """A prediction made through the platform's intake, as the API makes one for account
    ember (with `token_id`'s spend); it is accepted and durable when this returns."""
    caller = Principal("ember", "admin", token_id)
    return (await platform.intake.submit(target, Submission(input), caller)).state
