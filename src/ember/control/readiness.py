"""Keeps each deployment's cold-start tier ready: asks the pure tier policy
(`policies/tiers.py`) what to keep for every runner, tells each runner its choice (for its
status), and tells the runtime what to keep per package (`Runtime.keep_ready`).

It runs every few seconds (hosts' memory and deployments' activity change slowly) and at once
when deployments or their settings change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from ember.control.policies.tiers import TierRequest, choose_tiers
from ember.control.runner import DeploymentRunner
from ember.packages.spec import PackageSpec, parse_memory
from ember.runtime.base import Runtime, Tier
from ember.tasks import cancel_and_wait

logger = logging.getLogger("ember.control")

INTERVAL_SECONDS = 5.0
_FASTEST_FIRST = (Tier.WARM_HOST, Tier.DISK, Tier.COLD)


def default_warm_host_memory() -> int:
    """EMBER_WARM_HOST_MEMORY (e.g. "8Gi"), else half of this machine's memory: warm hosts
    hold imports and CPU weights, and the other half is left to replicas and the system."""
    configured = os.environ.get("EMBER_WARM_HOST_MEMORY")
    if configured:
        return parse_memory(configured)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024 // 2
    except OSError:
        pass
    return 8 * 2**30


class TierKeeper:
    def __init__(
        self,
        runtime: Runtime,
        runners: Callable[[], Iterable[DeploymentRunner]],
        memory_budget: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.runtime = runtime
        self.runners = runners
        self.memory_budget = memory_budget
        self.clock = clock
        self._host_memory: dict[str, int] = {}  # last measured, by package root
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop())

    def wake(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                await self.apply()
            except Exception:
                logger.exception("keeping cold-start tiers ready failed")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(INTERVAL_SECONDS):
                    await self._wake.wait()
            self._wake.clear()

    async def apply(self) -> None:
        """Choose every runner's tier now and have the runtime keep it."""
        runners = list(self.runners())
        requests = []
        for runner in runners:
            spec = runner.spec
            status = self.runtime.readiness(spec)
            if status.memory_bytes:
                self._host_memory[spec.root] = status.memory_bytes
            requests.append(
                TierRequest(
                    deployment=runner.name,
                    package=spec.root,
                    requested=runner.settings.cold_start_tier,
                    last_active=runner.last_active,
                    # Until its host has been measured, what the package says a replica needs.
                    host_memory=self._host_memory.get(spec.root, spec.resources.memory),
                    hosted=status.tier == Tier.WARM_HOST and status.ready,
                )
            )
        choices = choose_tiers(requests, self.clock(), self.memory_budget)
        per_package: dict[str, tuple[PackageSpec, Tier]] = {}
        for runner in runners:
            choice = choices[runner.name]
            runner.cold_start = choice
            kept = per_package.get(runner.spec.root)
            if kept is None or _FASTEST_FIRST.index(choice.tier) < _FASTEST_FIRST.index(kept[1]):
                per_package[runner.spec.root] = (runner.spec, choice.tier)
        await self.runtime.keep_ready(list(per_package.values()))
