"""Which cold-start tier to keep ready for each deployment: pure code, the clock passed in.

The tiers (fastest first): a warm host (a process per package that has done the imports and,
for CPU models, `setup()`, and forks replicas in milliseconds), disk (weights and libraries
held in the page cache), cold (nothing). Host RAM is cheap next to GPU time, so by default
(`auto`) every deployment gets a warm host while they all fit in the host-memory budget; when
they do not, the most recently used keep theirs and the rest fall back to the disk tier. A
deployment unused for a day gives its host's memory back. A tier the user sets is kept as set.

A running host is not given up for a newcomer merely used a moment later: hosts in use within
`HOLD_SECONDS` are admitted first, so two deployments that take turns do not swap one host
back and forth (each swap re-imports and re-runs setup).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ember.runtime.base import Tier

AUTO = "auto"
IDLE_RELEASE_SECONDS = 24 * 3600.0
HOLD_SECONDS = 600.0


@dataclass(frozen=True)
class TierRequest:
    deployment: str
    package: str  # deployments of one package share its warm host (and its memory)
    requested: str  # "auto" or a Tier value
    last_active: float  # when it was deployed or last got a request (clock seconds)
    host_memory: int  # bytes its warm host uses (measured) or is expected to use
    hosted: bool = False  # its package's warm host is running now


@dataclass(frozen=True)
class TierChoice:
    tier: Tier
    reason: str


def choose_tiers(
    requests: Iterable[TierRequest],
    now: float,
    memory_budget: int,
    idle_release: float = IDLE_RELEASE_SECONDS,
) -> dict[str, TierChoice]:
    """The tier each deployment keeps ready. Packages are admitted to the warm-host tier most
    recently used first, each counted once however many deployments share it."""
    choices: dict[str, TierChoice] = {}
    automatic: list[TierRequest] = []
    used = 0
    hosted: set[str] = set()
    for request in requests:
        if request.requested != AUTO:
            tier = Tier(request.requested)
            choices[request.deployment] = TierChoice(tier, "set by cold_start_tier")
            if tier == Tier.WARM_HOST and request.package not in hosted:
                hosted.add(request.package)
                used += request.host_memory
        else:
            automatic.append(request)
    automatic.sort(
        key=lambda r: (not (r.hosted and now - r.last_active < HOLD_SECONDS), -r.last_active)
    )
    budget = f"{memory_budget / 2**30:.1f} GiB"
    for request in automatic:
        idle = now - request.last_active
        if idle > idle_release:
            choices[request.deployment] = TierChoice(
                Tier.DISK, f"unused for {idle / 3600:.0f} h: host memory given back"
            )
        elif request.package in hosted:
            choices[request.deployment] = TierChoice(Tier.WARM_HOST, "host shared with another")
        elif used + request.host_memory <= memory_budget:
            hosted.add(request.package)
            used += request.host_memory
            choices[request.deployment] = TierChoice(
                Tier.WARM_HOST, f"fits the warm-host memory budget ({budget})"
            )
        else:
            choices[request.deployment] = TierChoice(
                Tier.DISK, f"warm-host memory budget ({budget}) held by more recent deployments"
            )
    return choices
