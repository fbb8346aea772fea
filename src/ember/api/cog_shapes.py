"""Ember's predictions and deployments in the shapes Cog's container server answers with.

A caller written for a Cog container reads `PredictionResponse` (Cog 0.16's fields, in its
order) and `GET /health-check`'s `{"status", "setup"}`; these translate Ember's records into
them, so the routes in `routes/cog_container.py` only move HTTP.
"""

from __future__ import annotations

from typing import Any

from ember.api.serialize import files_in, timestamp
from ember.control.platform import Platform
from ember.control.predictions import PredictionState
from ember.control.runner import DeploymentRunner
from ember.runtime.base import ReplicaState


def prediction(platform: Platform, state: PredictionState, inline_files: bool = False) -> dict:
    """Cog's `PredictionResponse`. Output files are data URIs in a synchronous answer, as
    Cog's server gives them when no `output_file_prefix` is set; elsewhere (an answer sent
    before the end, webhooks) they are Ember's signed links, as an `--upload-url` gives."""
    return {
        "input": state.public_input,
        "output": files_in(platform, state, state.output, inline_files),
        "id": state.id,
        "version": state.version_id,
        "created_at": timestamp(state.created_at),
        "started_at": timestamp(state.started_at),
        "completed_at": timestamp(state.completed_at),
        "logs": state.logs,
        "error": state.error,
        "status": state.status,
        "metrics": state.metrics,
    }


def _setup(status: str, logs: str) -> dict[str, Any]:
    """Cog's `SetupResult`. Ember does not keep when a replica's setup began and ended, so
    those two are null (Cog's own are null until setup ends)."""
    return {"started_at": None, "completed_at": None, "logs": logs, "status": status}


def health(runner: DeploymentRunner, user_error: str | None = None) -> dict[str, Any]:
    """Cog's health-check for a deployment: what a prediction sent now would meet.

    - READY: a ready replica has a free slot, or there is no replica at all (a deployment
      scaled to zero takes a prediction and starts a replica for it, so a caller that waits
      for READY before sending would otherwise wait forever);
    - BUSY: every ready replica's slots are taken, or predictions are waiting (Ember queues
      the next one where Cog would refuse it with 409);
    - STARTING: replicas are starting and none is ready (the prediction waits for one);
    - SETUP_FAILED: the last start failed in setup and none is ready (Ember retries the start
      with backoff; `setup.logs` says why it failed);
    - UNHEALTHY: the model's own healthcheck, asked on a ready replica just now, failed
      (`user_error`, Cog's `user_healthcheck_error`); it says nothing of the other states.
    """
    ready = [r for r in runner.replicas if r.state == ReplicaState.READY]
    if ready:
        full = all(r.in_flight >= r.max_concurrency for r in ready)
        status = "BUSY" if full or runner.queue else "READY"
        answer = {"status": status, "setup": _setup("succeeded", ready[0].setup_logs)}
        if user_error is not None:
            answer.update(status="UNHEALTHY", user_healthcheck_error=user_error)
        return answer
    if runner.last_setup_error:
        return {"status": "SETUP_FAILED", "setup": _setup("failed", runner.last_setup_error)}
    if runner.counts()["replicas"]["starting"]:
        return {"status": "STARTING", "setup": {}}
    return {"status": "READY", "setup": {}}
