"""Replay request traffic through scaling policies, with modelled replica start times, to predict
GPU-seconds billed and how long requests wait: pure and deterministic (no I/O, no wall clock).

Used by the product to price candidate scaling settings on a deployment's own recorded traffic,
and by the benchmark (bench/simulate.py: Ember against the peers' defaults, bench/baselines.py,
on traces), so both run the same engine and the same policy code as the live controller.

- `policy`: the `Policy` interface the engine calls, and its time constants.
- `engine`: the event loop for one deployment (`run_model`) and its assumptions (`ReplayParams`).
- `ember_policy`: Ember's adapter around the live `Autoscaler` and `IdleHistory`.
- `results`: per-deployment and summarised metrics.
- `evaluate`: `Request` records in, `Result` out: `replay` through a policy, `dedicated` for an
  always-on pool.
"""

from ember.control.replay.ember_policy import Ember, ember_factory, make_ember
from ember.control.replay.engine import (
    COLD,
    HOST,
    WARM,
    ReplayParams,
    has_warm_host,
    run_model,
    zero_start_label,
)
from ember.control.replay.evaluate import Request, dedicated, replay
from ember.control.replay.policy import INF, QUIET_TICKS, TICK, Policy
from ember.control.replay.results import ModelResult, Result, percentile, summarize

__all__ = [
    "COLD",
    "HOST",
    "INF",
    "QUIET_TICKS",
    "TICK",
    "WARM",
    "Ember",
    "ModelResult",
    "Policy",
    "ReplayParams",
    "Request",
    "Result",
    "dedicated",
    "ember_factory",
    "has_warm_host",
    "make_ember",
    "percentile",
    "replay",
    "run_model",
    "summarize",
    "zero_start_label",
]
