"""Scaling with real processes: from zero and back, bursts up to max_instances, live settings,
queue limits. A real `ember serve`, real replicas, real HTTP."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.support.paths import model_path
from tests.support.server import EmberServer, running

SLEEPER = model_path("faults", "sync")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmberServer]:
    with running(tmp_path_factory.mktemp("ember-scaling")) as instance:
        instance.deploy(SLEEPER, "ember", "sleeper")
        yield instance


def create(api: httpx.Client, name: str, **settings: object) -> None:
    response = api.post(
        "/v1/deployments", json={"name": name, "model": "ember/sleeper", **settings}
    )
    assert response.status_code == 201, response.text


def status(api: httpx.Client, name: str) -> dict:
    return api.get(f"/v1/deployments/ember/{name}").json()["status"]


def wait_for(check, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


def test_a_request_at_zero_is_held_not_refused(server: EmberServer) -> None:
    with server.client() as api:
        create(api, "zero")
        assert status(api, "zero")["replicas"] == {"starting": 0, "ready": 0}
    result = server.predict("zero", mode="ok")
    assert result["status"] == "succeeded" and result["output"] == "ok"


def test_burst_scales_out_to_max_and_back_to_zero(server: EmberServer) -> None:
    with server.client() as api:
        create(api, "burst", max_instances=4, idle_timeout=1, scale_down_delay=0)
        with ThreadPoolExecutor(50) as pool:
            futures = [
                pool.submit(server.predict, "burst", mode="sleep", seconds=0.5) for _ in range(50)
            ]
            wait_for(lambda: status(api, "burst")["replicas"]["ready"] == 4)
            results = [f.result() for f in futures]
        assert all(r["status"] == "succeeded" for r in results)
        assert status(api, "burst")["replicas"]["ready"] <= 4
        # idle past idle_timeout: back to zero, in-flight work long finished
        wait_for(lambda: status(api, "burst")["replicas"] == {"starting": 0, "ready": 0})


def test_scale_in_never_cuts_an_in_flight_prediction(server: EmberServer) -> None:
    with server.client() as api:
        create(api, "drain", max_instances=2, idle_timeout=0.5, scale_down_delay=0)
        with ThreadPoolExecutor(4) as pool:
            long = pool.submit(server.predict, "drain", mode="sleep", seconds=4)
            short = [pool.submit(server.predict, "drain", mode="ok") for _ in range(3)]
            assert all(f.result()["status"] == "succeeded" for f in short)
            result = long.result()
        assert result["status"] == "succeeded", result["error"]
        assert result["metrics"]["predict_time"] >= 4


def test_min_instances_changed_live_takes_effect(server: EmberServer) -> None:
    with server.client() as api:
        create(api, "warm")
        assert status(api, "warm")["replicas"]["ready"] == 0
        response = api.patch("/v1/deployments/ember/warm", json={"min_instances": 1})
        assert response.status_code == 200, response.text
        assert response.json()["current_release"]["configuration"]["min_instances"] == 1
        wait_for(lambda: status(api, "warm")["replicas"]["ready"] == 1)
        api.patch("/v1/deployments/ember/warm", json={"min_instances": 0, "idle_timeout": 0.5})
        wait_for(lambda: status(api, "warm")["replicas"]["ready"] == 0)


def test_queue_overflow_answers_429_with_retry_after(server: EmberServer) -> None:
    with server.client() as api:
        create(api, "small", queue_limit=1)
        first = api.post(
            "/v1/deployments/ember/small/predictions",
            json={"input": {"mode": "sleep", "seconds": 3}},
        )
        assert first.status_code == 201
        statuses = []
        for _ in range(4):  # the replica takes one (+1 prefetched); the queue holds one more
            response = api.post(
                "/v1/deployments/ember/small/predictions",
                json={"input": {"mode": "sleep", "seconds": 3}},
            )
            statuses.append(response.status_code)
            if response.status_code == 429:
                body = response.json()
                assert body["status"] == 429 and "queue_limit" in body["detail"]
                assert response.headers["Retry-After"] == "1"
        assert 429 in statuses


def test_invalid_scaling_settings_are_a_clear_422(server: EmberServer) -> None:
    with server.client() as api:
        response = api.post(
            "/v1/deployments",
            json={"name": "bad", "model": "ember/sleeper", "keep_warm": ["mon-fri 8-19=1"]},
        )
        assert response.status_code == 422
        assert "keep-warm window" in str(response.json()["detail"])
        response = api.post(
            "/v1/deployments",
            json={"name": "bad", "model": "ember/sleeper", "min_instances": 3, "max_instances": 2},
        )
        assert response.status_code == 422
        assert "cannot exceed" in response.json()["detail"]


def test_metrics_report_predictions_replicas_starts_and_scaling(server: EmberServer) -> None:
    with server.client() as api:
        create(api, "metered", idle_timeout=30, cold_start_tier="cold")
        assert server.predict("metered", mode="ok")["status"] == "succeeded"
        text = api.get("/metrics").text
    assert 'ember_predictions_total{deployment="ember/metered",status="succeeded"} 1.0' in text
    assert 'ember_prediction_queue_seconds_count{deployment="ember/metered"} 1.0' in text
    assert 'ember_replicas{deployment="ember/metered",state="ready"} 1.0' in text
    assert (
        'ember_replica_starts_total{deployment="ember/metered",outcome="ready",tier="cold"}' in text
    )
    for phase in ("spawn", "load", "setup", "ready", "first_prediction"):
        assert f'deployment="ember/metered",le="+Inf",phase="{phase}",tier="cold"' in text
    assert 'ember_scale_events_total{deployment="ember/metered",direction="up"} 1.0' in text


def test_a_start_from_zero_forks_from_the_warm_host_and_the_tier_changes_live(
    server: EmberServer,
) -> None:
    with server.client() as api:
        create(api, "forked", idle_timeout=0, scale_down_delay=0)
        wait_for(lambda: status(api, "forked")["cold_start"]["ready"])
        cold_start = status(api, "forked")["cold_start"]
        assert cold_start["tier"] == "warm-host" and cold_start["requested"] == "auto"
        assert cold_start["setup_in_host"] and cold_start["memory_bytes"] > 0
        assert server.predict("forked", mode="ok")["status"] == "succeeded"
        text = api.get("/metrics").text
        assert (
            'ember_replica_starts_total{deployment="ember/forked",outcome="ready",'
            'tier="warm-host"} 1.0' in text
        )
        for phase in ("fork", "ready", "first_prediction"):
            assert f'deployment="ember/forked",le="+Inf",phase="{phase}",tier="warm-host"' in text
        assert 'ember_cold_start_tier{deployment="ember/forked",ready="true",tier="warm-host"}' in (
            text
        )
        response = api.patch("/v1/deployments/ember/forked", json={"cold_start_tier": "cold"})
        assert response.status_code == 200, response.text
        wait_for(lambda: status(api, "forked")["cold_start"]["tier"] == "cold")
        wait_for(lambda: status(api, "forked")["replicas"] == {"starting": 0, "ready": 0})
        assert server.predict("forked", mode="ok")["status"] == "succeeded"
        text = api.get("/metrics").text
        assert (
            'ember_replica_starts_total{deployment="ember/forked",outcome="ready",'
            'tier="cold"} 1.0' in text
        )


def test_a_crash_loses_only_the_prediction_that_crashed(server: EmberServer) -> None:
    """Predictions queued behind a crashing one (in the deployment or inside the dying
    worker) run on a fresh replica instead of failing or hanging."""
    with server.client() as api:
        create(api, "crashy")
        crash = api.post(
            "/v1/deployments/ember/crashy/predictions", json={"input": {"mode": "crash"}}
        ).json()
        behind = [
            api.post(
                "/v1/deployments/ember/crashy/predictions", json={"input": {"mode": "ok"}}
            ).json()
            for _ in range(3)
        ]

        def final(prediction_id: str) -> dict:
            return api.get(f"/v1/predictions/{prediction_id}").json()

        wait_for(lambda: all(final(p["id"])["status"] == "succeeded" for p in behind))
        crashed = final(crash["id"])
        assert crashed["status"] == "failed" and "exited with code -9" in crashed["error"]


def test_learned_idle_history_survives_a_restart(server: EmberServer) -> None:
    """Runs last in this module: it restarts the module's server."""
    with server.client() as api:
        create(api, "learner", idle_timeout=30)
        server.predict("learner", mode="ok")
        time.sleep(0.3)  # an idle gap the deployment learns from
        server.predict("learner", mode="ok")
        learned = status(api, "learner")["keepalive"]
        assert learned["samples"] == 1 and learned["mode"] == "default"
    server.stop()
    server.start()
    with server.client() as api:
        assert status(api, "learner")["keepalive"]["samples"] == 1
