"""Fault injection with real processes: what happens to accepted predictions when a replica is
killed (kill -9), freezes (SIGSTOP: no heartbeat), is preempted (SIGTERM), cannot start, or
when `ember serve` itself is told to stop.

Each test drives a real `ember serve` (or, for the restart backoff, a real deployment runner
over real worker processes) and ends by polling every prediction it made to a terminal state:
none is lost, none is left starting or processing. The faults are injected by pid, found in
the prediction's own logs (the `steps` model logs the pid that runs it).
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ember.control.policies.restarts import restart_backoff
from ember.control.runner import DeploymentRunner
from ember.control.scaling import ScalingSettings
from ember.packages.loader import read_package
from ember.runtime.local import HEARTBEAT_TIMEOUT_ENV, LocalRuntime
from tests.support.api import TERMINAL, poll
from tests.support.paths import model_path
from tests.support.processes import reported_pid, wait_gone
from tests.support.server import EmberServer, running

pytestmark = pytest.mark.timeout(60)

STEPS = model_path("faults", "steps")
HEARTBEAT_TIMEOUT = 2  # seconds of silence before the module's server recycles a replica


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmberServer]:
    """One `ember serve` whose replicas are recycled after 2 s without a heartbeat."""
    with running(
        tmp_path_factory.mktemp("ember-faults"),
        env={HEARTBEAT_TIMEOUT_ENV: str(HEARTBEAT_TIMEOUT)},
    ) as instance:
        instance.deploy(STEPS, "ember", "steps")
        yield instance


# -- helpers ------------------------------------------------------------------------------


def create(api: httpx.Client, name: str, **settings: object) -> None:
    """A deployment of the steps model; one replica unless told otherwise."""
    body = {"name": name, "model": "ember/steps", "max_instances": 1, **settings}
    response = api.post("/v1/deployments", json=body)
    assert response.status_code == 201, response.text


def submit(api: httpx.Client, deployment: str, **inputs: object) -> str:
    """Accept a prediction (201: committed before the answer) and return its id."""
    response = api.post(f"/v1/deployments/ember/{deployment}/predictions", json={"input": inputs})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def pids(body: dict[str, Any]) -> list[str]:
    """The replicas that ran the prediction, in order, as each named itself: its pid in its
    PID namespace and that namespace (`reported_pid` finds it here while it lives)."""
    return re.findall(r"^pid (\d+@\S+)$", body["logs"] or "", re.MULTILINE)


def replica_of(api: httpx.Client, prediction_id: str, outputs: int = 0) -> str:
    """The pid of the replica running the prediction, once it has shown `outputs` items."""
    deadline = time.monotonic() + 20
    while True:
        body = api.get(f"/v1/predictions/{prediction_id}").json()
        assert body["status"] not in TERMINAL, f"{prediction_id} ended too soon: {body}"
        if pids(body) and len(body["output"] or []) >= outputs:
            return pids(body)[0]
        assert time.monotonic() < deadline, f"{prediction_id} never ran: {body}"
        time.sleep(0.02)


def settle(api: httpx.Client, ids: list[str]) -> dict[str, dict[str, Any]]:
    """Every prediction's final record: each must reach a terminal state (none lost)."""
    return {prediction_id: poll(api, prediction_id, timeout=30) for prediction_id in ids}


def stamp(value: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(value)


# -- a replica killed ------------------------------------------------------------------------


def test_kill_9_before_any_output_runs_the_prediction_again_on_another_replica(
    server: EmberServer, api: httpx.Client
) -> None:
    create(api, "killed")
    first = submit(api, "killed", seconds=1.5)
    behind = submit(api, "killed")  # waits behind it (inside the worker: prefetched)
    victim = replica_of(api, first)
    os.kill(reported_pid(victim), signal.SIGKILL)
    final = settle(api, [first, behind])

    retried = final[first]
    assert retried["status"] == "succeeded", retried
    assert retried["output"] == ["done"]
    assert retried["metrics"]["retries"] == 1
    assert "exited with code -9" in retried["logs"]
    assert "running it again on another replica (retry 1 of 1)" in retried["logs"]
    assert pids(retried)[0] == victim and pids(retried)[1] != victim
    assert final[behind]["status"] == "succeeded", final[behind]
    assert "retries" not in final[behind]["metrics"]  # it had not started: no retry spent


def test_a_canceled_prediction_whose_replica_dies_is_not_run_again(
    server: EmberServer, api: httpx.Client
) -> None:
    """The cancel is sent to a frozen replica, which is then killed before it could act on
    it: the prediction, which had shown no output, would be retried; canceled, it is not."""
    create(api, "canceled")
    doomed = submit(api, "canceled", seconds=5)
    victim = replica_of(api, doomed)
    stopped = reported_pid(victim)
    os.kill(stopped, signal.SIGSTOP)
    try:
        canceled = api.post(f"/v1/predictions/{doomed}/cancel")
        assert canceled.status_code == 200, canceled.text
    finally:
        os.kill(stopped, signal.SIGKILL)
    final = settle(api, [doomed])[doomed]
    assert final["status"] == "canceled", final
    assert "retries" not in final["metrics"] and pids(final) == [victim]


def test_kill_9_after_output_or_with_retries_off_fails_with_the_reason(
    server: EmberServer, api: httpx.Client
) -> None:
    create(api, "shown")
    create(api, "no-retries", prediction_retries=0)
    shown = submit(api, "shown", outputs=1, seconds=30)
    plain = submit(api, "no-retries", seconds=30)
    os.kill(reported_pid(replica_of(api, shown, outputs=1)), signal.SIGKILL)
    os.kill(reported_pid(replica_of(api, plain)), signal.SIGKILL)
    final = settle(api, [shown, plain])

    assert final[shown]["status"] == "failed"
    assert "already produced output, so it cannot be run again" in final[shown]["error"]
    assert final[shown]["output"] == ["item 0"]  # what the client saw is kept
    assert final[plain]["status"] == "failed"
    assert "exited with code -9" in final[plain]["error"]
    assert "(run 1 time(s); prediction_retries is 0)" in final[plain]["error"]
    assert all("retries" not in body["metrics"] for body in final.values())


# -- a replica frozen -----------------------------------------------------------------------


def test_a_frozen_replica_is_recycled_and_its_prediction_runs_on_another(
    server: EmberServer, api: httpx.Client
) -> None:
    create(api, "frozen")
    frozen = submit(api, "frozen", seconds=1)
    victim = replica_of(api, frozen)
    frozen_pid = reported_pid(victim)
    os.kill(frozen_pid, signal.SIGSTOP)
    try:
        final = settle(api, [frozen])[frozen]
        assert not wait_gone([frozen_pid]), "the frozen replica was not killed"
    finally:
        if wait_gone([frozen_pid], timeout=0):
            os.kill(frozen_pid, signal.SIGKILL)  # leave nothing frozen behind a failed test

    assert final["status"] == "succeeded", final
    assert f"replica stopped responding (no heartbeat for {HEARTBEAT_TIMEOUT} s)" in final["logs"]
    assert final["metrics"]["retries"] == 1
    assert pids(final)[1] != victim


# -- a replica preempted --------------------------------------------------------------------


def test_a_preempted_replica_finishes_its_prediction_and_the_rest_run_on_a_replacement(
    server: EmberServer, api: httpx.Client
) -> None:
    """SIGTERM, as a spot machine gets before it goes: the running prediction completes
    there; the one waiting inside the worker and the one queued run on a replacement."""
    create(api, "spot")
    ids = [submit(api, "spot", seconds=1) for _ in range(3)]
    victim = replica_of(api, ids[0])
    preempted = reported_pid(victim)
    os.kill(preempted, signal.SIGTERM)
    final = settle(api, ids)

    assert [final[i]["status"] for i in ids] == ["succeeded"] * 3, final
    assert pids(final[ids[0]]) == [victim]
    assert all(pids(final[i]) and victim not in pids(final[i]) for i in ids[1:])
    assert all("retries" not in body["metrics"] for body in final.values())
    assert not wait_gone([preempted]), "the preempted replica did not exit once drained"


# -- a replica that cannot start --------------------------------------------------------------


def test_a_model_that_exits_in_setup_is_restarted_ever_later_and_says_so(
    ember_home: Path,
) -> None:
    """A deployment kept at one replica of a model whose setup exits: starts 1 s, then 2 s
    after a failure (not a tight loop), and its status says why and when the next comes."""
    failures: list[float] = []

    def on_replica_event(deployment: str, kind: str, data: dict[str, Any]) -> None:
        if kind == "start":
            assert not data["ok"]
            failures.append(time.monotonic())

    async def go() -> dict[str, Any]:
        runtime = LocalRuntime(ember_home)
        runner = DeploymentRunner(
            "ember/setup-exits",
            read_package(model_path("faults", "setup-exits")),
            runtime,
            on_event=lambda state, event: None,
            settings=ScalingSettings(min_instances=1),
            on_replica_event=on_replica_event,
        )
        runner.wake()
        try:
            while len(failures) < 3:
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.05)  # the runner counts the failure after reporting it
            return runner.status()
        finally:
            await runner.close()
            await runtime.close()

    status = asyncio.run(go())
    gaps = [later - earlier for earlier, later in itertools.pairwise(failures)]
    assert gaps[0] >= restart_backoff(1) and gaps[1] >= restart_backoff(2), gaps
    assert "exited with code 7 during setup" in status["setup_error"]
    backoff = status["restart_backoff"]
    assert backoff["failed_starts"] == 3
    assert restart_backoff(2) < backoff["next_start_in"] <= restart_backoff(3)
    assert "3 failed start(s) in a row; next start in" in backoff["detail"]
    assert status["replicas"] == {"starting": 0, "ready": 0}


# -- ember serve stopped ----------------------------------------------------------------------


def test_sigterm_to_ember_serve_drains_running_predictions_and_keeps_queued_ones(
    server: EmberServer, api: httpx.Client
) -> None:
    """Runs last in this module: it restarts the module's server (without the short heartbeat
    timeout, which this test does not need)."""
    create(api, "graceful")
    ids = [submit(api, "graceful", seconds=1) for _ in range(4)]
    poll(api, ids[0], until=frozenset({"processing"}))
    server.stop()  # SIGTERM
    # It exited by itself (uvicorn re-raises the SIGTERM once shut down), not killed at 30 s.
    assert server.process is not None
    assert server.process.returncode in (0, -signal.SIGTERM), server.process.returncode
    stopped = datetime.datetime.now(datetime.UTC)
    server.start()  # same data dir: what was queued is picked up again
    with server.client() as restarted:
        final = settle(restarted, ids)

    assert [final[i]["status"] for i in ids] == ["succeeded"] * 4, final
    # The running one (and the one prefetched behind it) finished before the server exited ...
    assert stamp(final[ids[0]]["completed_at"]) < stopped
    # ... the queued ones stayed `starting` through the restart, and ran after it.
    assert stamp(final[ids[-1]]["started_at"]) > stopped
    assert all(
        stamp(final[i]["completed_at"]) < stopped or stamp(final[i]["started_at"]) > stopped
        for i in ids
    ), "a prediction was running across the restart"
