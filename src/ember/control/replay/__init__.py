"""Replay request traffic through scaling policies, with modelled replica start times, to predict
GPU-seconds billed and how long requests wait: pure and deterministic (no I/O, no wall clock).

Used by the benchmark (bench/simulate.py: Ember against the peers' defaults on traces) and by
the product to price candidate scaling settings on a deployment's own recorded traffic, so both
run the same engine and the same policy code as the live controller.

- `engine`: the event loop for one deployment (`run_model`) and its assumptions (`ReplayParams`).
- `policies`: the `Policy` interface, Ember's adapter around the live `Autoscaler` and
  `IdleHistory`, and the peers' baselines.
- `results`: per-deployment and summarised metrics.
- `evaluate`: `Request` records in, `Result` out: `replay` through a policy, `dedicated` for an
  always-on pool.
"""

from ember.control.replay.engine import (
    COLD,
    HOST,
    INF,
    QUIET_TICKS,
    TICK,
    WARM,
    ReplayParams,
    has_warm_host,
    run_model,
    zero_start_label,
)
from ember.control.replay.evaluate import Request, dedicated, replay
from ember.control.replay.policies import (
    POLICIES,
    Baseten,
    Ember,
    FixedKeepAlive,
    Knative,
    Policy,
    RayServe,
    ember_factory,
    ember_settings,
    make_ember,
)
from ember.control.replay.results import ModelResult, Result, percentile, summarize

__all__ = [
    "COLD",
    "HOST",
    "INF",
    "POLICIES",
    "QUIET_TICKS",
    "TICK",
    "WARM",
    "Baseten",
    "Ember",
    "FixedKeepAlive",
    "Knative",
    "ModelResult",
    "Policy",
    "RayServe",
    "ReplayParams",
    "Request",
    "Result",
    "dedicated",
    "ember_factory",
    "ember_settings",
    "has_warm_host",
    "make_ember",
    "percentile",
    "replay",
    "run_model",
    "summarize",
    "zero_start_label",
]
