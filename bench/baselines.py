"""The peers' default scaling policies (fixed keep-alive, Knative, Ray Serve, Baseten) as small
pure baselines for the trace replay, and `POLICIES`: them and Ember at its defaults, by name.

Why baselines: "what would the same traffic cost on the usual serverless defaults" is the
comparison the benchmark answers (bench/simulate.py). Each baseline has the defaults quoted in
shared/docs/autoscaling.md.

Why here and not in the product: only the benchmark and its tests run them. The product's cost
advisor prices Ember's own settings on a deployment's traffic (`ember.control.replay`), and the
replay engine, the `Policy` interface and Ember's adapter stay there; these implement the same
interface from outside.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

from ember.control.replay import INF, TICK, Policy, ReplayParams, make_ember
from ember.control.scaling import ScalingSettings


class _Window:
    """Mean of per-tick samples over the last `seconds` (inclusive), in O(1) per sample."""

    __slots__ = ("samples", "seconds", "total")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.samples: deque[tuple[float, int]] = deque()
        self.total = 0

    def add(self, now: float, value: int) -> float:
        samples = self.samples
        samples.append((now, value))
        self.total += value
        edge = now - self.seconds
        while samples[0][0] < edge:
            self.total -= samples.popleft()[1]
        return self.total / len(samples)


class FixedKeepAlive(Policy):
    """Replicate/AWS Lambda-like: every waiting request gets a replica at once (up to the
    ceiling); a replica stops after `keepalive` seconds without work. Per-replica idle expiry
    is tracked per level: replica n lives while demand reached n within `keepalive`."""

    def __init__(self, keepalive: float, ceiling: int) -> None:
        self.name = f"fixed {keepalive / 60:g} min"
        self.keepalive = keepalive
        self.ceiling = ceiling
        self.last_needed = [-INF] * (ceiling + 1)

    def tick(self, now: float, in_flight: int, queued: int, replicas: int, ready: int) -> int:
        last = self.last_needed
        for n in range(1, min(in_flight + queued, self.ceiling) + 1):
            last[n] = now
        edge = now - self.keepalive
        for n in range(self.ceiling, 0, -1):
            if last[n] > edge:
                return n
        return 0


class Knative(Policy):
    """Knative Serving KPA defaults (pkg/autoscaler/config/config.go, scaling/autoscaler.go):
    target = 70% of container concurrency (1) = 0.7; stable window 60 s, panic window 6 s,
    panic threshold 200%; max scale-down rate 2 (at most halve per decision); scale to zero only
    after the stable window saw no traffic plus the 30 s grace period; at zero the activator
    holds requests and reports their concurrency at once. With no pods there is no data, so
    after an idle spell the windows average only what came since the first request (Knative's
    bucket averages cover the part of the window since the first write): one request at zero
    wants ceil(1 / 0.7) = 2 pods, and the panic mode holds them for a stable window. (KPA
    decides every 2 s; here every tick, 1 s.)"""

    name = "Knative"

    def __init__(self, ceiling: int, *, target: float = 0.7, stable: float = 60.0,
                 panic: float = 6.0, threshold: float = 2.0, max_down_rate: float = 2.0,
                 grace: float = 30.0) -> None:  # fmt: skip
        self.ceiling, self.target, self.threshold = ceiling, target, threshold
        self.max_down_rate, self.stable_seconds, self.grace = max_down_rate, stable, grace
        self.stable, self.panic = _Window(stable), _Window(panic)
        self.panic_time: float | None = None
        self.max_panic = 0
        self.last_active = -INF

    def tick(self, now: float, in_flight: int, queued: int, replicas: int, ready: int) -> int:
        demand = in_flight + queued
        if replicas == 0 and demand == 0:
            return 0  # no pods to scrape and nothing held by the activator: no data
        stable, panic = self.stable.add(now, demand), self.panic.add(now, demand)
        if demand > 0:
            self.last_active = now
        if replicas == 0:  # activator: the held requests are the signal
            return min(self.ceiling, math.ceil(demand / self.target))
        ready_n = max(1, ready)
        max_down = math.floor(ready_n / self.max_down_rate)
        dspc, dppc = math.ceil(stable / self.target), math.ceil(panic / self.target)
        desired_stable, desired_panic = max(dspc, max_down), max(dppc, max_down)
        over = dppc / ready_n >= self.threshold
        if over:
            self.panic_time = now  # begin, or extend, panicking
        elif self.panic_time is not None and now > self.panic_time + self.stable_seconds:
            self.panic_time, self.max_panic = None, 0
        desired = desired_stable
        if self.panic_time is not None:  # never scale down while panicking
            self.max_panic = max(self.max_panic, desired_stable, desired_panic)
            desired = self.max_panic
        if desired == 0 and now - self.last_active < self.stable_seconds + self.grace:
            desired = 1
        return min(desired, self.ceiling)


class RayServe(Policy):
    """Ray Serve defaults (python/ray/serve/autoscaling_policy.py, config.py), min_replicas 0:
    desired = requests (ongoing + queued, averaged over look_back 30 s) / target_ongoing 2,
    smoothing factor 1; an up or down wish must hold for consecutive decisions covering
    upscale_delay 30 s / downscale_delay 600 s (downscale_to_zero_delay = downscale_delay,
    only from 1 to 0); with no running replica, any request scales to 1 at once (no delay).
    Requests wait in the handle's queue. (ray#59076, min 0 never reaching zero from 2.51, is not
    modelled: this is the documented behaviour.)"""

    name = "Ray Serve"

    def __init__(self, ceiling: int, *, target: float = 2.0, look_back: float = 30.0,
                 upscale_delay: float = 30.0, downscale_delay: float = 600.0) -> None:  # fmt: skip
        self.ceiling, self.target = ceiling, target
        self.window = _Window(look_back)
        self.up_periods = int(upscale_delay / TICK)
        self.down_periods = int(downscale_delay / TICK)
        self.counter = 0
        self.decision = 0  # Ray's target_num_replicas

    def tick(self, now: float, in_flight: int, queued: int, replicas: int, ready: int) -> int:
        demand = in_flight + queued
        average = self.window.add(now, demand)
        if ready == 0:  # cold-start fast path: bypasses the delays
            if demand > 0:
                self.decision = max(1, self.decision)
            return self.decision
        wanted = math.ceil(average / self.target)  # ceil(current + 1 * (desired - current))
        wanted = max(0, min(self.ceiling, wanted))
        current = self.decision
        if wanted > current:
            self.counter = max(self.counter, 0) + 1
            if self.counter > self.up_periods:
                self.counter, self.decision = 0, wanted
        elif wanted < current:
            self.counter = min(self.counter, 0) - 1
            if current != 1:
                wanted = max(1, wanted)  # to zero only from one replica
            if self.counter < -self.down_periods:
                self.counter, self.decision = 0, wanted
        else:
            self.counter = 0
        return self.decision


class Baseten(Policy):
    """Baseten defaults (docs, "autoscaling settings"): min 0, autoscaling window 60 s,
    concurrency target 1 at 70% utilization (scale up when the window's mean in-flight per
    replica exceeds 0.7), scale-down delay 900 s (a lower count must be wanted that long),
    max scale-down rate 50% per step; from zero a request starts one replica at once (requests
    queue meanwhile)."""

    name = "Baseten"

    def __init__(self, ceiling: int, *, window: float = 60.0, target: float = 1.0,
                 utilization: float = 0.7, scale_down_delay: float = 900.0) -> None:  # fmt: skip
        self.ceiling = ceiling
        self.per_replica = target * utilization
        self.window = _Window(window)
        self.delay = scale_down_delay
        self.down_since: float | None = None

    def tick(self, now: float, in_flight: int, queued: int, replicas: int, ready: int) -> int:
        demand = in_flight + queued
        wanted = min(self.ceiling, math.ceil(self.window.add(now, demand) / self.per_replica))
        if replicas == 0:
            self.down_since = None
            return max(1, wanted) if demand else 0
        if wanted >= replicas:
            self.down_since = None
            return wanted
        if self.down_since is None:
            self.down_since = now
        if now - self.down_since < self.delay:
            return replicas
        self.down_since = now  # the next step waits a full delay again
        return max(wanted, (replicas + 1) // 2) if replicas > 1 else wanted


def ember_settings(max_instances: int) -> ScalingSettings:
    """Ember's default settings with the replay's ceiling."""
    return ScalingSettings(max_instances=max_instances)


POLICIES: dict[str, Callable[[ReplayParams], Policy]] = {
    "Ember": lambda p: make_ember(p, ember_settings(p.max_instances)),
    "fixed 5 min": lambda p: FixedKeepAlive(300.0, p.max_instances),
    "fixed 10 min": lambda p: FixedKeepAlive(600.0, p.max_instances),
    "Knative": lambda p: Knative(p.max_instances),
    "Ray Serve": lambda p: RayServe(p.max_instances),
    "Baseten": lambda p: Baseten(p.max_instances),
}
"""Ember with its default settings and the peers' defaults, by name, each at the replay's
ceiling (`ReplayParams.max_instances`)."""
