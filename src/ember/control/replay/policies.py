"""Scaling policies the replay can run: Ember's own (an adapter around the live controller's
policy code, not a re-implementation) and the peers' defaults as small pure baselines.

Why an adapter for Ember: a prediction of what Ember will do is only worth something if it is
what Ember does. So `Ember` calls `Autoscaler` and `IdleHistory` exactly as
ember/control/runner.py does (observe, then decide, every tick, with `Limits` built like
`DeploymentRunner.limits`), and takes any `ScalingSettings`, so candidate settings (min
instances, idle timeout, keep-warm windows, max instances, target concurrency) can be compared
on a deployment's own traffic.

Why the baselines: "what would the same traffic cost on the usual serverless defaults" is the
comparison users ask for. Each baseline has the defaults quoted in shared/docs/autoscaling.md.

Every policy is called once per tick with what the deployment looks like and returns the
replica count it wants. No I/O and no clock: all state is in the object, all time comes in as
arguments (seconds from the start of the replay).
"""

from __future__ import annotations

import datetime
import math
from collections import deque
from collections.abc import Callable

from ember.control.policies.autoscaling import STABLE_WINDOW, Autoscaler, Limits, Observation
from ember.control.policies.keepalive import IdleHistory, KeepAliveWindows
from ember.control.replay.engine import INF, QUIET_TICKS, TICK, ReplayParams
from ember.control.scaling import DEFAULT_IDLE_TIMEOUT, ScalingSettings, keep_warm_floor


class Policy:
    """What the replay calls. Subclasses implement `tick`; the rest has safe defaults."""

    name = "policy"
    warm_host = False
    """True when a start from zero forks from a warm host (costs `host_start`, not
    `cold_start`): Ember's warm-host tier. The peers pay the cold start."""
    quiet_ticks = QUIET_TICKS
    """Quiet ticks (no work, nothing starting) after which this policy's state is settled, and
    ticks to replay before its next possible change: at least its longest averaging window."""
    zero_settle_ticks: int | None = None
    """Quiet ticks after which, at zero replicas, it may skip ahead (None: `quiet_ticks`)."""
    can_fast_forward = False
    """True when `fast_forward` can stand in for the ticks replayed before a wake-up."""

    def tick(self, now: float, in_flight: int, queued: int, replicas: int, ready: int) -> int:
        """The replica count wanted now, given requests running and queued, replicas alive
        (ready + starting) and ready."""
        raise NotImplementedError

    def gap(self, seconds: float) -> None:
        """A request ended an idle gap of `seconds` (from the last work to its arrival)."""

    def zero_wake(self, now: float) -> float:
        """At zero replicas with no work: the earliest time this policy could want a replica
        (INF: not before a request comes)."""
        return INF

    def hold_wake(self, now: float, replicas: int) -> float:
        """With no work and `replicas` ready and idle, after a tick that kept them: the earliest
        time this policy could want another count if no request comes. `now` (the default):
        it cannot say, so the replay keeps ticking."""
        return now

    def fast_forward(self, times: list[float], replicas: int) -> None:
        """Bring the state to what ticks at `times` (quiet: no work, `replicas` ready and idle,
        the count kept) would leave, cheaper than ticking. Only called when
        `can_fast_forward`, between a `zero_wake`/`hold_wake` and the wake-up."""
        raise NotImplementedError

    def describe(self) -> str:
        """State worth showing per model at the end of a run (learned windows)."""
        return ""


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


_STEADY_REASONS = frozenset(
    {"demand", "idle past keep-alive", "floor (min instances, keep-warm or pre-warm)"}
)
"""Decision reasons that `Autoscaler.decide` returns unchanged when the count stays as it is
and no delayed change is pending ("scale-up delay", "scale-down delay" and "no scale-down while
panicking" mean one is). A reason not listed here (say, reworded) only stops the replay from
skipping ahead: slower, never wrong."""


class Ember(Policy):
    """Ember's policy, run as the live controller runs it (ember/control/runner.py `tick` and
    `limits`): `Autoscaler.observe(Observation(now, running, queued, alive + starting))` then
    `Autoscaler.decide(now, Limits(...))`, with the Limits built from `settings` exactly as
    `DeploymentRunner.limits` builds them: floor = max(min_instances, keep-warm windows at the
    wall time, the learned pre-warm), capped by max_instances; target = target_concurrency or
    the replica's slots (`concurrency`).

    Keep-warm windows apply by wall time: `epoch` is the wall time of the replay's time 0 (UTC
    when naive); settings with keep-warm windows need one.

    Learned keep-alive (ember/control/policies/keepalive.py): when a request arrives at a
    deployment with nothing outstanding, the gap since its last prediction finished is recorded
    in its `IdleHistory` (the runner's `submit`); `windows(DEFAULT_IDLE_TIMEOUT)` gives the
    `KeepAliveWindows`. With `prewarm == 0`, `Limits.keepalive` is the window's keep-alive. With
    `prewarm > 0` (unload after each burst, be warm again before the next), `Limits.keepalive`
    is 0 and the floor is 1 while `warm_at(idle_for)` holds. A set `idle_timeout` replaces all
    of it. `lead` (default 0, as the runner) starts the pre-warm that many seconds early: an
    experiment; with 0 the replica is only *ready* a start time after the window opens.

    Start costs (the runner's measured `StartTimes`, policies/costs.py): `start_seconds` is
    what a start from zero takes, passed to `windows(DEFAULT_IDLE_TIMEOUT, start_seconds)` for
    the cost-aware keep-alive; `scale_out_seconds` is what a request waits for a scale-out,
    passed as `Limits.scale_out_seconds` (the hold of extra replicas); both only while the
    keep-alive is learned (a set `idle_timeout` keeps the configured behaviour, as the runner).
    The runner measures them; here starts take fixed durations, so they are the durations the
    replay charges (`make_ember`). Constructed directly without them: the start-agnostic
    windows and delays (the runner before its first measured start).
    """

    name = "Ember"
    quiet_ticks = int(STABLE_WINDOW / TICK) + 2
    """The Autoscaler averages over STABLE_WINDOW (the panic window is shorter and a panic
    lasts STABLE_WINDOW): STABLE_WINDOW / TICK + 1 quiet ticks leave only zeros in its window,
    and as many replayed before a change give it the full window of zeros that ticking every
    second would; one more for margin."""
    zero_settle_ticks = 1
    """At zero replicas with no work the Autoscaler wants zero whatever its window holds (it
    only got there idle past its keep-alive, and only an arrival changes that keep-alive) until
    a floor rises (`zero_wake`); the `quiet_ticks` replayed before that refill its window and
    reset its timers. So it may skip from its first quiet tick at zero."""
    can_fast_forward = True

    def __init__(
        self,
        settings: ScalingSettings,
        *,
        concurrency: int = 1,
        lead: float = 0.0,
        warm_host: bool = False,
        start_seconds: float | None = None,
        scale_out_seconds: float | None = None,
        epoch: datetime.datetime | None = None,
    ):
        self.scaler = Autoscaler()
        self.settings = settings
        self.lead = lead
        self.warm_host = warm_host
        self.start_seconds = start_seconds
        self.scale_out_seconds = scale_out_seconds
        self.keep_warm = settings.windows
        if self.keep_warm and epoch is None:
            raise ValueError("keep-warm windows apply by wall time: give the replay's epoch")
        if epoch is not None and epoch.tzinfo is None:
            epoch = epoch.replace(tzinfo=datetime.UTC)
        self.epoch = epoch
        self.learn = settings.idle_timeout is None
        self.default_keepalive = (
            settings.idle_timeout if settings.idle_timeout is not None else DEFAULT_IDLE_TIMEOUT
        )
        self.history = IdleHistory()
        self.windows: KeepAliveWindows = (
            self.history.windows(self.default_keepalive, start_seconds)
            if self.learn
            else KeepAliveWindows(0.0, self.default_keepalive, "fixed", 0)
        )
        self.target = float(settings.target_concurrency or concurrency)
        self._limits: dict[tuple[int, float], Limits] = {}
        self._steady = False  # the last decision kept the count, nothing pending
        self._edge = (INF, INF)  # (computed at, next keep-warm window edge after it)

    def gap(self, seconds: float) -> None:
        if self.learn:
            self.history.record(seconds)
            self.windows = self.history.windows(self.default_keepalive, self.start_seconds)

    def limits(self, floor: int, keepalive: float) -> Limits:
        key = (floor, keepalive)
        limits = self._limits.get(key)
        if limits is None:
            settings = self.settings
            limits = self._limits[key] = Limits(
                floor=floor,
                ceiling=settings.max_instances,
                target=self.target,
                scale_up_delay=settings.scale_up_delay,
                scale_down_delay=settings.scale_down_delay,
                keepalive=keepalive,
                # like the runner: start costs shape the learned policy only; a set
                # idle_timeout keeps the configured delays as they are
                scale_out_seconds=self.scale_out_seconds if self.learn else None,
            )
        return limits

    def wall(self, now: float) -> datetime.datetime:
        """The wall time of replay second `now`."""
        assert self.epoch is not None
        return self.epoch + datetime.timedelta(seconds=now)

    def tick(self, now: float, in_flight: int, queued: int, replicas: int, ready: int) -> int:
        scaler = self.scaler
        scaler.observe(Observation(now, in_flight, queued, replicas))
        windows = self.windows
        floor = self.settings.min_instances
        if self.keep_warm:
            floor = max(floor, keep_warm_floor(self.keep_warm, self.wall(now)))
        if windows.prewarm > 0:
            keepalive = 0.0
            if floor < 1:
                idle_for = scaler.idle_for(now)
                if windows.warm_at(idle_for) or (
                    self.lead and windows.warm_at(idle_for + self.lead)
                ):
                    floor = 1
        else:
            keepalive = windows.keepalive
        floor = min(floor, self.settings.max_instances)
        decision = scaler.decide(now, self.limits(floor, keepalive))
        self._steady = (
            decision.replicas == replicas
            and not decision.panic
            and decision.reason in _STEADY_REASONS
        )
        return decision.replicas

    def zero_wake(self, now: float) -> float:
        wake = INF
        windows, last_busy = self.windows, self.scaler.last_busy
        if windows.prewarm > 0 and last_busy is not None:
            start = last_busy + windows.prewarm - self.lead
            if start > now:
                wake = start
            elif now <= last_busy + windows.warm_until:
                # Inside the window (or at its edge, within float rounding): keep ticking.
                return now
        if self.keep_warm:
            wake = min(wake, self._next_edge(now))
        return wake

    def hold_wake(self, now: float, replicas: int) -> float:
        """With no work, the count changes only when the keep-alive runs out, a pre-warm
        window opens or closes, or a keep-warm window starts or ends (the floor); nothing else
        moves while the Autoscaler's window holds only zeros and no delay is pending."""
        if not self._steady:
            return now
        windows, last_busy = self.windows, self.scaler.last_busy
        edges: list[float] = []
        if last_busy is not None:
            if windows.prewarm > 0:
                lead = self.lead
                edges += [
                    last_busy + windows.prewarm - lead,
                    last_busy + windows.warm_until - lead,
                    last_busy + windows.prewarm,
                    last_busy + windows.warm_until,
                ]
            else:
                edges.append(last_busy + windows.keepalive)
        if self.keep_warm:
            edges.append(self._next_edge(now))
        # An edge within the last tick may not have been seen yet (float rounding): keep
        # ticking through it.
        return min((edge for edge in edges if edge > now - TICK), default=INF)

    def fast_forward(self, times: list[float], replicas: int) -> None:
        """The quiet ticks before a wake-up, as the Autoscaler would have seen them: one
        decision (it keeps the count, as `zero_wake`/`hold_wake` promised, and clears any timer
        a scale-in to zero left), then observations of zero demand only. Deciding at the others
        would change nothing: with no demand, a count it keeps and no timer pending, `decide`
        only clears what is already clear; the observations are what its windows average."""
        if not times:
            return
        if self.tick(times[0], 0, 0, replicas, replicas) != replicas:
            raise RuntimeError(
                f"{self.name}: the replay skipped ahead of a change at {times[0]:.3f} s"
            )
        observe = self.scaler.observe
        for now in times[1:]:
            observe(Observation(now, 0, 0, replicas))

    def _next_edge(self, now: float) -> float:
        """The next start or end of any keep-warm window after `now - TICK`, in replay
        seconds (every day's, whatever its weekdays: an edge too many only costs ticks)."""
        computed_at, edge = self._edge
        if computed_at <= now and edge > now - TICK:
            return edge
        moment = self.wall(now).astimezone(datetime.UTC)
        epoch = self.epoch
        assert epoch is not None
        best = INF
        for window in self.keep_warm:
            if window.count <= 0:
                continue
            for offset in (-1, 0, 1, 2):
                day = moment.date() + datetime.timedelta(days=offset)
                for time in (window.start, window.end):
                    at = datetime.datetime.combine(day, time, tzinfo=datetime.UTC)
                    seconds = (at - epoch).total_seconds()
                    if now - TICK < seconds < best:
                        best = seconds
        self._edge = (now, best)
        return best

    def describe(self) -> str:
        w = self.windows
        if w.prewarm > 0:
            return f"{w.mode} {w.prewarm / 60:.0f}+{w.keepalive / 60:.0f} min"
        if w.keepalive < 60:
            return f"{w.mode} {w.keepalive:.0f} s"
        return f"{w.mode} {w.keepalive / 60:.0f} min"


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


def make_ember(
    p: ReplayParams,
    settings: ScalingSettings,
    warm_host: bool = True,
    *,
    epoch: datetime.datetime | None = None,
) -> Ember:
    """Ember as deployed: a warm host per deployment (starts from zero take `host_start`), its
    windows told that start time; without one, cold starts and windows told `cold_start`. The
    scale-out wait it is told is a loaded-host start plus, on average, half a tick before the
    controller notices the waiting request (none with `wake_on_queue`), as the runner would
    measure and pass them. `epoch`: the wall time of replay second 0, for keep-warm windows."""
    start = p.host_start if warm_host else p.cold_start
    scale_out = p.warm_start + (0.0 if p.wake_on_queue else TICK / 2)
    return Ember(
        settings,
        lead=p.prewarm_lead,
        warm_host=warm_host,
        start_seconds=start,
        scale_out_seconds=scale_out,
        epoch=epoch,
    )


def ember_factory(
    settings: ScalingSettings,
    *,
    warm_host: bool = True,
    epoch: datetime.datetime | None = None,
    name: str | None = None,
) -> Callable[[ReplayParams], Ember]:
    """A `replay` policy factory for Ember with these settings (a fresh policy per
    deployment): the way to compare candidate settings on the same traffic. The replay's
    `max_instances` must allow the settings' (it caps every policy, silently)."""

    def make(p: ReplayParams) -> Ember:
        if settings.max_instances > p.max_instances:
            raise ValueError(
                f"the replay allows {p.max_instances} replicas, the settings "
                f"{settings.max_instances}: give ReplayParams(max_instances=...) at least those"
            )
        policy = make_ember(p, settings, warm_host, epoch=epoch)
        if name is not None:
            policy.name = name
        return policy

    return make


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
