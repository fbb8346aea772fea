"""Replicas on a real local runtime, without a server: start one, run a prediction and read
its events, or submit through the platform's intake as the API does."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ember.control.access import Principal
from ember.control.deployments import Target
from ember.control.intake import Submission
from ember.control.platform import Platform
from ember.control.predictions import PredictionState
from ember.packages.loader import read_package
from ember.packages.spec import PackageSpec
from ember.runtime.base import (
    PredictionEvent,
    PredictionRequest,
    PredictionResult,
    ReplicaState,
    Tier,
)
from ember.runtime.local import LocalRuntime
from ember.runtime.local_replica import LocalReplica
from tests.support.paths import model_path

# A model whose replicas may fork from a warm host (no threads or CUDA before the fork).
FORKABLE = model_path("ember", "forkable")


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
    """A replica of `spec` (a package or its folder), ready; fails with its setup error."""
    if not isinstance(spec, PackageSpec):
        spec = read_package(spec)
    replica = await runtime.start_replica(spec)
    state = await replica.wait_started()
    assert state == ReplicaState.READY, replica.setup_error
    return replica


async def predict(replica: LocalReplica, prediction_id: str = "p1", **request: Any) -> Run:
    """One prediction on `replica`, its events read through the handle's iterator."""
    handle = replica.submit(PredictionRequest(id=prediction_id, **request))
    events = [event async for event in handle.events()]
    return Run(await handle.result(), events, replica)


def with_replica(
    runtime: LocalRuntime, path: str | Path, body: Callable[[LocalReplica], Awaitable[Any]]
) -> Any:
    """Start one replica of `path`, run the async `body(replica)`, always stop the replica."""

    async def go() -> Any:
        replica = await start(runtime, path)
        try:
            return await body(replica)
        finally:
            await replica.stop()

    return asyncio.run(go())


def run_once(runtime: LocalRuntime, path: str | Path, **request: Any) -> Run:
    """Start a replica of `path`, run one prediction, stop the replica."""

    async def go() -> Run:
        replica = await start(runtime, path)
        try:
            return await predict(replica, **request)
        finally:
            await replica.stop()

    return asyncio.run(go())


async def submit(
    platform: Platform, target: Target, input: dict[str, Any], token_id: str | None = None
) -> PredictionState:
    """A prediction made through the platform's intake, as the API makes one for account
    ember (with `token_id`'s spend); it is accepted and durable when this returns."""
    caller = Principal("ember", "admin", token_id)
    return (await platform.intake.submit(target, Submission(input), caller)).state


async def warm(runtime: LocalRuntime, spec: PackageSpec, tier: Tier = Tier.WARM_HOST) -> None:
    """Keep `tier` ready for `spec` and wait until it is (or its warm host failed)."""
    await runtime.keep_ready([(spec, tier)])
    for _ in range(400):
        status = runtime.readiness(spec)
        if status.ready or (status.detail or "").startswith("warm host failed"):
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"{tier} never became ready: {runtime.readiness(spec)}")


def hosted(
    runtime: LocalRuntime,
    scenario: Callable[[PackageSpec], Awaitable[None]],
    spec: PackageSpec | None = None,
    tier: Tier = Tier.WARM_HOST,
    wait: bool = True,
) -> None:
    """Keep `tier` ready for `spec` (the forkable model by default), run the scenario, then
    release everything the runtime kept."""

    async def go() -> None:
        package = spec or read_package(FORKABLE)
        if wait:
            await warm(runtime, package, tier)
        else:
            await runtime.keep_ready([(package, tier)])
        try:
            await scenario(package)
        finally:
            await runtime.close()

    asyncio.run(go())
