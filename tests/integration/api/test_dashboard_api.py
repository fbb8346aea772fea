"""What the dashboard reads, through a real `ember serve`: a deployment's time series, filtered
prediction lists, the token list and revocation, and the dashboard's own files."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.paths import model_path
from tests.support.server import EmberServer, running

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmberServer]:
    with running(tmp_path_factory.mktemp("ember-dashboard-api")) as instance:
        instance.deploy(model_path("ember", "forkable"), "ember", "forkable")
        with instance.client() as api:
            for name in ("charted", "quiet"):
                created = api.post(
                    "/v1/deployments", json={"name": name, "model": "ember/forkable"}
                )
                assert created.status_code == 201, created.text
            for mode in ("info", "info", "crash"):
                api.post(
                    "/v1/deployments/ember/charted/predictions",
                    json={"input": {"mode": mode}},
                    headers={"Prefer": "wait=60"},
                )
        yield instance


def test_the_time_series_counts_what_happened(api: httpx.Client) -> None:
    time.sleep(2.5)  # at least one sample of the replicas after the predictions
    series = api.get("/v1/deployments/ember/charted/timeseries", params={"since": "15m"}).json()
    assert series["step"] == 10  # 15 minutes in at most 120 buckets
    assert len(series["t"]) == len(series["predictions"]) == len(series["queue"])
    assert series["t"] == sorted(series["t"]) and series["t"][0] % 10 == 0
    assert sum(series["predictions"]) == 3 and sum(series["failed"]) == 1
    assert any(p is not None and p > 0 for p in series["latency_p99"])
    assert max(r or 0 for r in series["replicas_ready"]) >= 1
    assert sum(series["replica_cost"]) > 0 and sum(series["charged"]) > 0
    tiers = {start["tier"] for start in series["cold_starts"]}
    assert tiers and tiers <= {"warm-host", "disk", "cold"}
    first = series["cold_starts"][0]
    assert first["seconds"] == first["phases"]["ready"] > 0 and first["replica"]
    assert "first_prediction" in first["phases"]


def test_the_time_series_of_an_idle_deployment_is_empty_but_whole(api: httpx.Client) -> None:
    series = api.get("/v1/deployments/ember/quiet/timeseries", params={"since": "1h"}).json()
    assert series["step"] == 30 and len(series["t"]) in (120, 121)
    assert sum(series["predictions"]) == 0 and series["cold_starts"] == []
    assert set(series["latency_p50"]) == {None}


def test_the_time_series_refuses_what_it_cannot_draw(api: httpx.Client) -> None:
    assert api.get("/v1/deployments/ember/nope/timeseries").status_code == 404
    bad_since = api.get("/v1/deployments/ember/charted/timeseries", params={"since": "soon"})
    assert bad_since.status_code == 400 and "15m" in bad_since.json()["detail"]
    tiny_step = api.get(
        "/v1/deployments/ember/charted/timeseries", params={"since": "7d", "step": 1}
    )
    assert tiny_step.status_code == 400 and "widen" in tiny_step.json()["detail"]


def test_predictions_filter_by_status_deployment_and_model(api: httpx.Client) -> None:
    def ids(**params: str) -> list[str]:
        response = api.get("/v1/predictions", params=params)
        assert response.status_code == 200, response.text
        return [p["id"] for p in response.json()["results"]]

    everything = ids()
    assert len(everything) == 3
    failed = ids(status="failed")
    assert len(failed) == 1 and set(failed) < set(everything)
    assert ids(deployment="ember/charted") == everything
    assert ids(deployment="ember/quiet") == []
    assert ids(model="ember/forkable", status="succeeded") == [
        i for i in everything if i not in failed
    ]
    refused = api.get("/v1/predictions", params={"status": "done"})
    assert refused.status_code == 400 and "succeeded" in refused.json()["detail"]


def test_tokens_are_listed_without_secrets_and_revoked_at_once(
    server: EmberServer, api: httpx.Client
) -> None:
    created = api.post("/v1/tokens", json={"name": "robot", "scope": "predict"}).json()
    listed = api.get("/v1/tokens").json()["results"]
    [robot] = [t for t in listed if t["id"] == created["id"]]
    assert robot == {
        "id": created["id"],
        "name": "robot",
        "owner": "ember",
        "scope": "predict",
        "rate_limit": None,
        "created_at": robot["created_at"],
    }
    with server.client(created["token"]) as as_robot:
        assert as_robot.get("/v1/account").status_code == 200  # now cached as valid
        assert as_robot.get("/v1/tokens").status_code == 403
        assert as_robot.delete(f"/v1/tokens/{created['id']}").status_code == 403
        assert api.delete(f"/v1/tokens/{created['id']}").status_code == 204
        assert as_robot.get("/v1/account").status_code == 401
    again = api.delete(f"/v1/tokens/{created['id']}")
    assert again.status_code == 404 and "GET /v1/tokens" in again.json()["detail"]


def test_the_dashboard_is_served_by_the_gateway_itself(server: EmberServer) -> None:
    page = httpx.get(f"{server.url}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src" not in page.headers["content-security-policy"]  # default-src 'self'
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert '<script type="module" src="/ui/app.js">' in page.text
    script = httpx.get(f"{server.url}/ui/app.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert httpx.get(f"{server.url}/ui/vendor/uPlot.iife.min.js").status_code == 200
    # Encoded dots reach the static files as they are (httpx folds a plain "../" itself):
    # this names the package's own api/app.py, beside the static folder, and must not serve it.
    outside = httpx.get(f"{server.url}/ui/%2e%2e/%2e%2e/api/app.py")
    assert outside.status_code == 404 and "create_app" not in outside.text
