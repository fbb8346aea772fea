"""The discrete-event loop: one deployment's requests replayed through one scaling policy, with
modelled replica start times. Pure and deterministic (no I/O, no clock, no randomness), so the
same inputs give the same numbers in a benchmark (bench/simulate.py), a test, or the product's
cost advisor.

Why an event loop and not a formula: what a policy costs depends on when it scales, and it
scales on what it observed tick by tick (averaging windows, delays, learned keep-alive). So the
replay calls the policy as the live controller does and lets requests queue, wait for starts and
run on the replicas it asked for.

The model (one deployment; `run_model`):

- Replicas run one request at a time (concurrency 1); at most `ReplayParams.max_instances`.
- Requests wait in the deployment's FIFO queue (nothing is refused), also while replicas start.
  A request goes to a free ready replica at once, else waits.
- A replica start takes `cold_start` seconds when none of the deployment's replicas is loaded,
  or `warm_start` seconds when one is (scale-out from a host holding the weights).
  `host_cache` also counts a start within that many seconds of the last replica stopping as
  warm. A policy with a warm host (`Policy.warm_host`, Ember's tier; every policy with
  `warm_host_all`) starts from zero in `host_start` seconds instead of `cold_start`.
- The policy is called every `TICK` (1 s, the runner's TICK_SECONDS), and at once when a request
  arrives with no replica alive (the runner's `wake()`); `wake_on_queue` also calls it whenever a
  request has to wait. The controller runs from `Policy.quiet_ticks` ticks plus a start from
  zero before time 0, so the policy has a window of zero demand behind it, and a floor's
  replicas are ready, when the span begins.
- Scale-in cancels starting replicas first (oldest first), then stops idle ones, then drains
  busy ones (they finish their request and take no new one): the live runner's order.
- Billing covers the span from time 0 (nothing before it counts): a replica is billed from
  when it is asked to start (or 0) until it stops, starting, idle and draining time included,
  and to the end of the span (or the last request's end) if it is still up then. Busy = the sum
  of service times; idle = billed - starting - busy. Starts and scale events before time 0 (the
  lead-in) are not counted either.

Speed, exactly: with no work, no replica starting and the policy quiet for `quiet_ticks`
ticks (`zero_settle_ticks` at zero replicas), the loop asks the policy when it could next want a
different count (`zero_wake` at zero replicas, `hold_wake` with idle ones) and skips ahead to
`quiet_ticks` ticks before that or the next arrival, whichever is first. Those ticks change
nothing (the policies forget their inputs within their windows and reset their timers at a
steady count), and the ticks before each change are replayed, so the numbers equal ticking
every second (`exact=True`); tests check it. A policy that can (`Policy.can_fast_forward`:
Ember) takes the replayed ticks as observations only, and decides again two ticks before the
change: a decision there would change nothing either, and costs most of a tick.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from ember.control.replay.policy import INF, TICK, Policy
from ember.control.replay.results import ModelResult

FAST_FORWARD_MARGIN = 2
"""Ticks decided in full before a wake-up when the policy fast-forwards (`Policy.fast_forward`):
the edges it reports are exact to far less than a tick, so two leave room for rounding."""

WARM, COLD, HOST = 0, 1, 2
"""How a replica started: WARM a scale-out while a replica was loaded, COLD from nothing, HOST
from the warm host (Ember's tier)."""


@dataclass(frozen=True)
class ReplayParams:
    """What the replay assumes about the hardware and the controller (not the policy)."""

    cold_start: float = 10.0
    """Seconds to start a replica with no copy of the model loaded (weights onto a fresh GPU)."""
    warm_start: float = 0.3
    """Seconds to start one while another is loaded (scale-out from a host holding the weights)."""
    host_start: float = 1.0
    """Seconds a start from zero takes for a policy with a warm host (Ember)."""
    warm_host_all: bool = False
    """Every policy gets the warm host (isolates the policy's part from the tier's)."""
    host_cache: float = 0.0
    """Seconds a stopped replica's weights stay in host memory (a start within them is warm)."""
    max_instances: int = 4
    """Replicas the loop allows any policy, whatever it asks for."""
    exact: bool = False
    """Tick every second everywhere (no skipping of quiet stretches)."""
    wake_on_queue: bool = False
    """Decide at once whenever a request must wait, not only at zero replicas (an experiment)."""
    prewarm_lead: float = 0.0
    """Ember: begin a learned pre-warm this many seconds early (the runner: 0)."""


def has_warm_host(policy: Policy, params: ReplayParams) -> bool:
    """Whether a start from zero forks a warm host (`host_start`) rather than a cold start."""
    return policy.warm_host or params.warm_host_all


def zero_start_label(policy: Policy, params: ReplayParams) -> str:
    """What a start from zero costs `policy` in this replay: reports say it beside the policy."""
    if has_warm_host(policy, params):
        return f"{params.host_start:g} s host"
    return f"{params.cold_start:g} s cold"


def _clip(t: float) -> float:
    """A moment clipped to the span's start: nothing before time 0 is billed."""
    return t if t > 0.0 else 0.0


def run_model(
    arrivals: Sequence[float],
    services: Sequence[float],
    policy: Policy,
    params: ReplayParams,
    duration: float,
) -> ModelResult:
    """Replay one deployment's requests (arrival times in seconds from 0, sorted, and their
    service times) against `policy`; bill until `duration` or the last request's end.

    Replicas are small lists: starting and idle [billed_from, ready_at, tier]; busy [busy_until,
    billed_from, ready_at, draining, tier] (billed_from: when it was asked for, clipped to 0;
    tier: COLD, HOST or WARM)."""
    n = len(arrivals)
    cold_start, warm_start, host_cache = params.cold_start, params.warm_start, params.host_cache
    # A start from zero: from the warm host for a policy that has one, else cold.
    zero_start, zero_tier = (
        (params.host_start, HOST) if has_warm_host(policy, params) else (cold_start, COLD)
    )
    ceiling, exact, wake_on_queue = params.max_instances, params.exact, params.wake_on_queue
    quiet_ticks = policy.quiet_ticks
    fast_forward = policy.can_fast_forward
    zero_settle = policy.zero_settle_ticks
    if zero_settle is None:
        zero_settle = quiet_ticks
    tick = policy.tick
    starting: list[list[float]] = []
    idle: list[list[float]] = []
    busy: list[list] = []
    draining = 0
    queue: deque[int] = deque()
    delays = [0.0] * n
    cold = host = waited = 0
    billed = starting_s = draining_s = 0.0
    events = cold_starts = warm_starts = host_starts = ticks = 0
    last_stop = -INF  # when a loaded replica of this model last stopped (host cache)
    idle_since: float | None = None  # when the model last ran out of work
    last_done = 0.0
    i = 0
    # The controller runs from before the span starts: the policy has seen a full window of
    # zero demand before the first request, and a floor's replicas are ready at time 0.
    # Ticks fall at `anchor + k * TICK`: the same moments whether quiet stretches are skipped
    # or ticked through (adding TICK tick after tick would round differently), so a keep-alive
    # that ends on a tick ends on the same one both ways. A wake moves the anchor.
    anchor = -(quiet_ticks + math.ceil(zero_start / TICK)) * TICK
    k = 0
    tick_at = anchor
    quiet = 0
    end = duration

    while True:
        ta = arrivals[i] if i < n else INF
        tr = min([r[1] for r in starting]) if starting else INF
        tb = min([b[0] for b in busy]) if busy else INF

        if tb <= tr and tb <= ta and tb <= tick_at and tb < INF:  # a request finishes
            t = tb
            for b in busy:
                if b[0] == t:
                    break
            last_done = t
            if b[3]:  # draining: stop
                busy.remove(b)
                draining -= 1
                billed += t - b[1]
                starting_s += _clip(b[2]) - b[1]
                last_stop = t
            elif queue:
                j = queue.popleft()
                delays[j] = t - arrivals[j]
                if b[2] > arrivals[j]:
                    waited += 1
                    if b[4] == COLD:
                        cold += 1
                    elif b[4] == HOST:
                        host += 1
                b[0] = t + services[j]
            else:
                busy.remove(b)
                idle.append([b[1], b[2], b[4]])
            if not busy and not queue:
                idle_since = t
            continue

        if tr <= ta and tr <= tick_at and tr < INF:  # a replica becomes ready
            t = tr
            for r in starting:
                if r[1] == t:
                    break
            starting.remove(r)
            if queue:
                j = queue.popleft()
                delays[j] = t - arrivals[j]
                waited += 1  # it arrived before this replica was ready
                if r[2] == COLD:
                    cold += 1
                elif r[2] == HOST:
                    host += 1
                busy.append([t + services[j], r[0], r[1], False, r[2]])
            else:
                idle.append(r)
            continue

        if ta <= tick_at and ta < INF:  # a request arrives
            t = ta
            j = i
            i += 1
            if not busy and not queue and idle_since is not None:
                policy.gap(t - idle_since)
            if idle:
                r = idle.pop()  # the most recently freed replica
                busy.append([t + services[j], r[0], r[1], False, r[2]])
            else:
                queue.append(j)
                if wake_on_queue or (not starting and len(busy) == draining):
                    tick_at = anchor = t  # nothing alive: decide now (the runner's wake)
                    k = 0
            continue

        if tick_at == INF:
            break
        # ---- a tick ------------------------------------------------------------------------
        now = tick_at
        if now > end and i >= n and not busy and not queue:
            break
        ticks += 1
        in_flight = len(busy)
        ready = len(idle) + in_flight - draining
        have = len(starting) + ready
        want = tick(now, in_flight, len(queue), have, ready)
        want = 0 if want < 0 else ceiling if want > ceiling else want
        if want > have:
            counted = now >= 0.0  # the lead-in before the span is not counted
            events += counted
            loaded = bool(idle) or bool(busy) or now - last_stop <= host_cache
            asked = _clip(now)
            for _ in range(want - have):
                if loaded:
                    warm_starts += counted
                    starting.append([asked, now + warm_start, WARM])
                else:
                    if zero_tier == HOST:
                        host_starts += counted
                    else:
                        cold_starts += counted
                    starting.append([asked, now + zero_start, zero_tier])
        elif want < have:
            events += now >= 0.0
            stop = _clip(now)
            remove = have - want
            while remove and starting:  # cancel starts first, oldest first (runner's order)
                r = starting.pop(0)
                billed += stop - r[0]
                starting_s += stop - r[0]
                remove -= 1
            while remove and idle:
                r = idle.pop(0)
                billed += stop - r[0]
                starting_s += _clip(r[1]) - r[0]
                last_stop = now
                remove -= 1
            while remove:  # drain the busy replica that finishes first
                b = min((b for b in busy if not b[3]), key=lambda b: b[0])
                b[3] = True
                draining += 1
                draining_s += b[0] - now
                remove -= 1
        have = want
        k += 1
        tick_at = anchor + k * TICK
        if not busy and not queue and not starting:
            # Nothing to do: once the policy has been quiet long enough, skip to shortly
            # before the next moment anything can change (an arrival, or the policy's own
            # wake-up: a pre-warm, a keep-alive running out, a keep-warm window).
            quiet += 1
            if quiet >= (quiet_ticks if have else zero_settle) and not exact:
                wake = policy.zero_wake(now) if have == 0 else policy.hold_wake(now, have)
                if i < n and arrivals[i] < wake:
                    wake = arrivals[i]
                if wake == INF or (wake > end and i >= n):
                    break  # nothing changes any more: idle replicas are billed to the end
                if fast_forward:
                    # The policy takes the quiet ticks just before the wake-up as observations
                    # only; decisions resume two ticks before it.
                    skip = math.floor((wake - now) / TICK) - FAST_FORWARD_MARGIN
                    if skip > 1:
                        first = max(1, skip - quiet_ticks)
                        base = k - 1  # `now` is anchor + base * TICK
                        policy.fast_forward(
                            [anchor + (base + j) * TICK for j in range(first, skip)], have
                        )
                        k = base + skip
                        tick_at = anchor + k * TICK
                else:
                    skip = math.floor((wake - now) / TICK) - quiet_ticks
                    if skip > 1:
                        k += skip - 1
                        tick_at = anchor + k * TICK
        else:
            quiet = 0

    horizon = max(end, last_done)
    for r in starting:
        billed += horizon - r[0]
        starting_s += min(horizon, _clip(r[1])) - r[0]
    for r in idle:
        billed += horizon - r[0]
        starting_s += _clip(r[1]) - r[0]
    return ModelResult(
        requests=n,
        cold=cold,
        host=host,
        waited=waited,
        delays=delays,
        billed=billed,
        starting=starting_s,
        busy=float(sum(services)),
        draining=draining_s,
        events=events,
        cold_starts=cold_starts,
        warm_starts=warm_starts,
        host_starts=host_starts,
        ticks=ticks,
        note=policy.describe(),
    )
