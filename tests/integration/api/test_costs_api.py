"""The cost ledger through a real `ember serve`: prediction costs, `GET /v1/costs`, prices,
and `ember costs` in its three forms carrying the same figures."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.paths import model_path
from tests.support.server import EmberServer, running

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmberServer]:
    with running(tmp_path_factory.mktemp("ember-costs")) as instance:
        instance.deploy(model_path("ember", "forkable"), "ember", "forkable")
        with instance.client() as api:
            response = api.post(
                "/v1/deployments",
                json={"name": "billed", "model": "ember/forkable", "hardware": "gpu-t4"},
            )
            assert response.status_code == 201, response.text
            prediction = api.post(
                "/v1/deployments/ember/billed/predictions",
                json={"input": {"mode": "info"}},
                headers={"Prefer": "wait=60"},
            ).json()
            assert prediction["status"] == "succeeded", prediction
        yield instance


def test_each_prediction_carries_its_cost(api: httpx.Client) -> None:
    [prediction] = api.get("/v1/predictions").json()["results"]
    metrics = prediction["metrics"]
    assert metrics["predict_time"] > 0
    assert metrics["cost"] > 0 and metrics["cost"] >= metrics["cold_start_cost"]


def test_the_report_groups_and_totals(api: httpx.Client) -> None:
    report = api.get("/v1/costs", params={"by": "deployment", "since": "1d"}).json()
    [row] = report["rows"]
    assert row["key"] == "ember/billed" and row["requests"] == 1 and row["replicas"] == 1
    assert row["cost"] > 0 and report["total"]["cost"] == pytest.approx(row["cost"])
    assert report["currency"] == "USD" and report["since"]
    by_hardware = api.get("/v1/costs", params={"by": "hardware"}).json()
    assert [r["key"] for r in by_hardware["rows"]] == ["gpu-t4"]


def test_bad_report_parameters_are_400_with_what_to_do(api: httpx.Client) -> None:
    response = api.get("/v1/costs", params={"by": "colour"})
    assert response.status_code == 400 and "deployment, day, hardware, token" in response.text
    response = api.get("/v1/costs", params={"since": "last tuesday"})
    assert response.status_code == 400 and "7d" in response.text


def test_prices_are_listed_and_set(api: httpx.Client) -> None:
    prices = api.get("/v1/prices").json()
    t4 = next(p for p in prices["hardware"] if p["sku"] == "gpu-t4")
    assert t4["per_second"] == 0.000225 and "replicate.com" in t4["source"]
    assert any(p["provider"] == "Groq" for p in prices["tokens"])
    response = api.patch("/v1/prices/gpu-t4", json={"per_second": 0.0002, "dedicated_hourly": 0.5})
    assert response.status_code == 200 and response.json()["dedicated_hourly"] == 0.5
    assert api.patch("/v1/prices/gpu-t4", json={"per_second": -1}).status_code == 422
    assert api.patch("/v1/prices/gpu-t4", json={}).status_code == 400


def test_ember_costs_prints_the_same_figures_as_table_json_and_csv(
    server: EmberServer, api: httpx.Client
) -> None:
    # Scaled to zero, nothing is billed any more: every form reads the same ledger.
    api.patch("/v1/deployments/ember/billed", json={"idle_timeout": 0})
    deadline = time.monotonic() + 30
    last = None
    while (cost := api.get("/v1/costs").json()["total"]["cost"]) != last:  # stopped: settled
        assert time.monotonic() < deadline, "the deployment did not scale to zero"
        last = cost
        time.sleep(0.3)
    as_json = server.cli("costs", "--format", "json")
    assert as_json.returncode == 0, as_json.stderr
    report = json.loads(as_json.stdout)
    as_csv = server.cli("costs", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert [r["key"] for r in rows] == ["ember/billed", "total"]
    assert float(rows[0]["cost"]) == pytest.approx(report["rows"][0]["cost"])
    assert int(rows[0]["requests"]) == report["rows"][0]["requests"]
    as_table = server.cli("costs")
    assert as_table.returncode == 0, as_table.stderr
    assert "Costs by deployment" in as_table.stdout and "ember/billed" in as_table.stdout
    assert f"{report['total']['cost']:.6f}" in as_table.stdout


def test_a_spent_budget_refuses_with_402_saying_which_and_when(
    server: EmberServer, api: httpx.Client
) -> None:
    created = api.post("/v1/tokens", json={"name": "alice", "scope": "predict"}).json()
    alice = created["token"]
    result = server.cli(
        "budget", "set", "--token-id", created["id"], "--per", "day", "--limit", "0.000001"
    )
    assert result.returncode == 0, result.stderr
    with server.client(alice) as as_alice:
        first = as_alice.post(
            "/v1/deployments/ember/billed/predictions",
            json={"input": {"mode": "info"}},
            headers={"Prefer": "wait=60"},
        )
        assert first.status_code == 201 and first.json()["status"] == "succeeded"
        refused = as_alice.post(
            "/v1/deployments/ember/billed/predictions", json={"input": {"mode": "info"}}
        )
    assert refused.status_code == 402
    assert f"API token {created['id']}" in refused.json()["detail"]
    assert "resets at" in refused.json()["detail"]
    listed = server.cli("budget", "ls")
    assert "token " + created["id"] in listed.stdout
    [budget] = api.get("/v1/budgets").json()["results"]
    assert budget["spent_usd"] >= 0.000001
    assert server.cli("budget", "rm", budget["id"]).returncode == 0
    assert api.get("/v1/budgets").json()["results"] == []
    bad = api.post(
        "/v1/budgets",
        json={"scope": "deployment", "target": "ember/nope", "period": "day", "limit_usd": 1},
    )
    assert bad.status_code == 404


def test_advice_replays_the_deployments_own_traffic(server: EmberServer, api: httpx.Client) -> None:
    report = api.get("/v1/deployments/ember/billed/advice", params={"days": 1}).json()
    assert report["deployment"] == "ember/billed" and report["requests"] >= 1
    assert report["price"]["sku"] == "gpu-t4"
    names = [o["name"] for o in report["options"]]
    assert names[0] == "as deployed" and "keep one replica warm" in names
    assert report["recommended"]["name"] in names
    assert api.get("/v1/deployments/ember/billed/advice", params={"days": 0}).status_code == 400
    assert api.get("/v1/deployments/ember/nope/advice").status_code == 404
    printed = server.cli("advise", "ember/billed", "--days", "1")
    assert printed.returncode == 0, printed.stderr
    assert "ember/billed" in printed.stdout and "→" in printed.stdout
    assert "Serverless or dedicated" in printed.stdout
