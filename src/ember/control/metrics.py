"""Prometheus metrics: what each deployment serves, how long it waits and runs, how its
replicas start and how it scales. Names follow Prometheus conventions and, where the idea is
the same, vLLM's (`*_seconds` histograms, `*_total` counters).

Fed by the control plane's events (never by polling) except the gauges (replicas by state,
queue length), which are read from the runners when Prometheus scrapes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ember.control.predictions import PredictionState

LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    120,
    300,
    600,
)
# vLLM's buckets for time to first token and inter-token latency.
TOKEN_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 10)
START_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


def deployment_label(state: PredictionState) -> str:
    """Deployment predictions by deployment name; version predictions by model."""
    return state.deployment or state.model


class _Gauges(Collector):
    """Replicas by state and queue lengths, read at scrape time."""

    def __init__(self, source: Callable[[], Iterable[tuple[str, dict[str, Any]]]]) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        replicas = GaugeMetricFamily(
            "ember_replicas", "Replicas of a deployment by state", labels=["deployment", "state"]
        )
        queued = GaugeMetricFamily(
            "ember_queue_length", "Predictions waiting for a replica", labels=["deployment"]
        )
        running = GaugeMetricFamily(
            "ember_predictions_running", "Predictions on replicas", labels=["deployment"]
        )
        desired = GaugeMetricFamily(
            "ember_replicas_desired", "The scaling policy's last decision", labels=["deployment"]
        )
        tier = GaugeMetricFamily(
            "ember_cold_start_tier",
            "The tier kept ready for the next start (1), and whether it is ready",
            labels=["deployment", "tier", "ready"],
        )
        host_memory = GaugeMetricFamily(
            "ember_warm_host_memory_bytes",
            "Proportional set size of the deployment's warm host",
            labels=["deployment"],
        )
        for name, status in self._source():
            for state, count in status["replicas"].items():
                replicas.add_metric([name, state], count)
            queued.add_metric([name], status["queued"])
            running.add_metric([name], status["running"])
            desired.add_metric([name], status["scaling"]["desired"])
            cold_start = status["cold_start"]
            ready = "true" if cold_start["ready"] else "false"
            tier.add_metric([name, cold_start["tier"], ready], 1)
            if cold_start["memory_bytes"] is not None:
                host_memory.add_metric([name], cold_start["memory_bytes"])
        yield from (replicas, queued, running, desired, tier, host_memory)


def _carries_tokens(state: PredictionState) -> bool:
    """Whether the item just streamed holds generated text: an OpenAI chunk counts only when
    a choice has content (not the role, finish or usage chunks); any other item counts."""
    item = state.last_item
    if not isinstance(item, dict) or "choices" not in item:
        return True
    for choice in item["choices"]:
        delta = choice.get("delta") or {}
        if delta.get("content") or choice.get("text"):
            return True
    return False


class Metrics:
    def __init__(
        self, status: Callable[[], Iterable[tuple[str, dict[str, Any]]]] = lambda: ()
    ) -> None:
        self.registry = CollectorRegistry()
        labels = ["deployment"]
        self.predictions = Counter(
            "ember_predictions",
            "Predictions finished, by outcome",
            [*labels, "status"],
            registry=self.registry,
        )
        self.queue_time = Histogram(
            "ember_prediction_queue_seconds",
            "From acceptance until a replica started it",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.predict_time = Histogram(
            "ember_prediction_predict_seconds",
            "Time inside predict()",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.total_time = Histogram(
            "ember_prediction_e2e_seconds",
            "From acceptance to completion",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.replica_starts = Counter(
            "ember_replica_starts",
            "Replica starts (cold starts), by tier and outcome",
            [*labels, "tier", "outcome"],
            registry=self.registry,
        )
        self.start_phase = Histogram(
            "ember_replica_start_phase_seconds",
            "Duration of each phase of a replica start: fork or spawn, load (imports), setup, "
            "ready (all until READY), first_prediction",
            [*labels, "tier", "phase"],
            buckets=START_BUCKETS,
            registry=self.registry,
        )
        self.unhealthy_replacements = Counter(
            "ember_unhealthy_replacements",
            "Replicas drained and replaced after failing their model's healthcheck in a row",
            labels,
            registry=self.registry,
        )
        self.scale_events = Counter(
            "ember_scale_events",
            "Replicas started (up) or drained (down) by the autoscaler",
            [*labels, "direction"],
            registry=self.registry,
        )
        # Streamed outputs (LLM tokens), named after vLLM's so its dashboards read them.
        self.time_to_first_token = Histogram(
            "ember_time_to_first_token_seconds",
            "From acceptance to the first streamed output item (queue and cold start included)",
            labels,
            buckets=TOKEN_BUCKETS,
            registry=self.registry,
        )
        self.inter_token_latency = Histogram(
            "ember_inter_token_latency_seconds",
            "Between successive streamed output items of one prediction",
            labels,
            buckets=TOKEN_BUCKETS,
            registry=self.registry,
        )
        self.prompt_tokens = Counter(
            "ember_prompt_tokens",
            "Input tokens of finished predictions, as their predictors counted them",
            labels,
            registry=self.registry,
        )
        self.cached_prompt_tokens = Counter(
            "ember_cached_prompt_tokens",
            "Input tokens of finished predictions their engine found already evaluated (a "
            "shared prefix reused from its cache)",
            labels,
            registry=self.registry,
        )
        self.generation_tokens = Counter(
            "ember_generation_tokens",
            "Output tokens of finished predictions, as their predictors counted them",
            labels,
            registry=self.registry,
        )
        self.registry.register(_Gauges(status))

    def on_prediction(self, state: PredictionState, event: str) -> None:
        """A platform listener: record streamed items as they come, predictions as they end."""
        if event == "output" and _carries_tokens(state):
            self._on_output(state)
        if event != "done":
            return
        name = deployment_label(state)
        for counter, metric in (
            (self.prompt_tokens, "input_token_count"),
            (self.cached_prompt_tokens, "cached_input_token_count"),
            (self.generation_tokens, "output_token_count"),
        ):
            count = state.metrics.get(metric)
            if isinstance(count, int | float) and count > 0:
                counter.labels(name).inc(count)
        self.predictions.labels(name, state.status).inc()
        if state.started_at is not None:
            queued = (state.started_at - state.created_at).total_seconds()
            self.queue_time.labels(name).observe(max(0.0, queued))
        if "predict_time" in state.metrics:
            self.predict_time.labels(name).observe(float(state.metrics["predict_time"]))
        if state.completed_at is not None:
            total = (state.completed_at - state.created_at).total_seconds()
            self.total_time.labels(name).observe(max(0.0, total))

    def _on_output(self, state: PredictionState) -> None:
        now = time.monotonic()
        name = deployment_label(state)
        if state.last_output_at is None:
            self.time_to_first_token.labels(name).observe(max(0.0, now - state.accepted_at))
        else:
            self.inter_token_latency.labels(name).observe(now - state.last_output_at)
        state.last_output_at = now

    def on_replica_event(self, deployment: str, kind: str, data: dict[str, Any]) -> None:
        """A runner's replica news: `scale` {direction, count}, `start` {tier, ok, phases},
        `first_prediction` {tier, seconds}, `unhealthy` {replica, why}."""
        if kind == "scale":
            self.scale_events.labels(deployment, data["direction"]).inc(data["count"])
        elif kind == "start":
            outcome = "ready" if data["ok"] else "failed"
            self.replica_starts.labels(deployment, data["tier"], outcome).inc()
            for phase, seconds in data["phases"].items():
                self.start_phase.labels(deployment, data["tier"], phase).observe(seconds)
        elif kind == "unhealthy":
            self.unhealthy_replacements.labels(deployment).inc()
        elif kind == "first_prediction":
            phase = self.start_phase.labels(deployment, data["tier"], "first_prediction")
            phase.observe(data["seconds"])
