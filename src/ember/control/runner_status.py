"""What a deployment's runner reports of itself (for the API, `ember ls` and the dashboard):
replicas by state, the last scaling decision, the tier kept ready for its next start and why,
what its idle gaps have taught the keep-alive, and why starts or healthchecks fail."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ember.control.scaling import DEFAULT_IDLE_TIMEOUT
from ember.runtime.base import Tier, TierStatus

if TYPE_CHECKING:
    from ember.control.runner import DeploymentRunner


def report(runner: DeploymentRunner) -> dict[str, Any]:
    return {
        **runner.counts(),
        "scaling": {
            "desired": runner.last_decision.replicas,
            "reason": runner.last_decision.reason,
        },
        "keepalive": _learned(runner),
        "cold_start": _cold_start(runner),
        "setup_error": runner.last_setup_error,  # why the last start failed, until one works
        "last_failure": runner.last_failure,  # the last replica that ended of its own, and why
        "restart_backoff": runner.restarts.report(runner.clock()),
        "unhealthy": runner.health.report(),  # replicas failing their model's healthcheck
        "placement": runner.runtime.placement(runner.spec),  # what a start waits for, if any
    }


def _cold_start(runner: DeploymentRunner) -> dict[str, Any]:
    """The tier kept ready for the next start, why, and whether it is ready now."""
    ready = runner.runtime.readiness(runner.spec)
    if runner.fork_failed and ready.tier == Tier.WARM_HOST:
        ready = TierStatus(
            Tier.WARM_HOST,
            ready=False,
            detail="replicas forked from the warm host failed to set up, so replicas "
            "start in full (e.g. an import initialised CUDA: keep it out of module level)",
        )
    elif ready.tier != runner.cold_start.tier:  # the package is kept faster for another
        ready = TierStatus(runner.cold_start.tier, ready=runner.cold_start.tier == Tier.COLD)
    return {
        "tier": ready.tier.value,
        "requested": runner.settings.cold_start_tier,
        "reason": runner.cold_start.reason,
        "ready": ready.ready,
        "detail": ready.detail,
        "setup_in_host": ready.setup_in_host,
        "memory_bytes": ready.memory_bytes,
    }


def _learned(runner: DeploymentRunner) -> dict[str, Any]:
    """What the deployment's idle gaps have taught the keep-alive so far."""
    windows = runner.history.windows(DEFAULT_IDLE_TIMEOUT, runner.start_seconds())
    return {
        "mode": windows.mode,
        "samples": windows.samples,
        "prewarm": windows.prewarm,
        "keepalive": windows.keepalive,
    }
