"""Ember's scaling policy for the replay: an adapter around the live controller's policy code,
not a re-implementation, and the factories that build it from `ScalingSettings`.

Why an adapter: a prediction of what Ember will do is only worth something if it is what Ember
does. So `Ember` calls `Autoscaler` and `IdleHistory` exactly as ember/control/runner.py does
(observe, then decide, every tick, with `Limits` built like `DeploymentRunner.limits`), and
takes any `ScalingSettings`, so candidate settings (min instances, idle timeout, keep-warm
windows, max instances, target concurrency) can be compared on a deployment's own traffic.

The peers' defaults it is compared against in the benchmark are bench/baselines.py's: the
product only ever prices Ember's own settings.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable

from ember.control.policies.autoscaling import STABLE_WINDOW, Autoscaler, Limits, Observation
from ember.control.policies.keepalive import IdleHistory, KeepAliveWindows
from ember.control.replay.engine import ReplayParams
from ember.control.replay.policy import INF, TICK, Policy
from ember.control.scaling import DEFAULT_IDLE_TIMEOUT, ScalingSettings, keep_warm_floor

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
