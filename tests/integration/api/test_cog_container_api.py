"""Cog's container HTTP API under /cog/{owner}/{name}/, against a real `ember serve`.

Each test sends what a caller written for a Cog container (`cog.server.http`, port 5000)
sends, with only the base URL changed and a bearer token added, and checks Cog's answers:
synchronous predictions in `PredictionResponse`'s shape, `PUT /predictions/{id}` answering
with the prediction that already has the id, `Prefer: respond-async`, cancel, health-check,
openapi.json, webhooks with `webhook_events_filter`, 422 for invalid input; and Ember's own
rules: 401 without a token, 404 for another owner's deployment. On SQLite and PostgreSQL
(where the caller's ids meet the database's column).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.support.api import BACKENDS, poll, serving
from tests.support.paths import model_path
from tests.support.server import EmberServer, package_archive
from tests.support.webhooks import WebhookReceiver

pytestmark = pytest.mark.timeout(180)

# Cog 0.16's PredictionResponse fields
COG_FIELDS = {
    "input",
    "output",
    "id",
    "version",
    "created_at",
    "started_at",
    "completed_at",
    "logs",
    "error",
    "status",
    "metrics",
}
# deployment name -> (kind, package folder)
DEPLOY = {
    "hello": ("cog", "hello-world"),
    "canary": ("cog", "canary"),
    "faults": ("faults", "sync"),
    "squares": ("ember", "image-out"),
    "checked": ("cog", "healthcheck"),
    "context": ("cog", "hello-context"),
    "sse": ("cog", "streaming-sse"),
    "iterator": ("cog", "iterator-output"),
}
ASYNC = {"Prefer": "respond-async"}


@dataclass
class World:
    server: EmberServer
    admin: httpx.Client
    bob: httpx.Client  # owner bob, who deployed bob/hello
    versions: dict[str, str]  # deployment name -> version id


def _deploy(client: httpx.Client, owner: str, name: str, kind: str, folder: str) -> str:
    """Model, version and deployment `owner/name`; the version id."""
    assert client.post("/v1/models", json={"owner": owner, "name": name}).status_code == 201
    version = client.post(
        f"/v1/models/{owner}/{name}/versions",
        files={"package": ("p.tar.gz", package_archive(model_path(kind, folder)))},
        timeout=300,
    )
    assert version.status_code == 201, version.text
    made = client.post("/v1/deployments", json={"name": name, "model": f"{owner}/{name}"})
    assert made.status_code == 201, made.text
    return version.json()["id"]


@pytest.fixture(scope="module", params=BACKENDS)
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    directory = tmp_path_factory.mktemp(f"ember-cog-api-{request.param}")
    with serving(request.param, directory) as server, server.client() as admin:
        versions = {
            name: _deploy(admin, "ember", name, kind, folder)
            for name, (kind, folder) in DEPLOY.items()
        }
        made = admin.post("/v1/tokens", json={"name": "bob", "owner": "bob", "scope": "deploy"})
        assert made.status_code == 201, made.text
        with server.client(made.json()["token"]) as bob:
            _deploy(bob, "bob", "hello", "cog", "hello-world")
            yield World(server, admin, bob, versions)


def _unique(prefix: str) -> str:
    return f"{prefix}-{time.monotonic_ns()}"


def _detail(response: httpx.Response, status: int) -> list[dict[str, Any]]:
    """Cog's (and FastAPI's) error body: `detail`, a list of {loc, msg, type}."""
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, list) and detail, detail
    assert all({"loc", "msg", "type"} <= set(entry) for entry in detail), detail
    return detail


def _wait_status(world: World, path: str, status: str, timeout: float = 20) -> dict[str, Any]:
    """GET a Cog path until its `status` is `status` (the health-check)."""
    deadline = time.monotonic() + timeout
    while True:
        body = world.admin.get(path).json()
        if body["status"] == status:
            return body
        assert time.monotonic() < deadline, f"{path} still {body}"
        time.sleep(0.05)


# -- predictions ------------------------------------------------------------------------------


def test_sync_prediction_answers_when_it_ends_in_cogs_shape(world: World) -> None:
    answer = world.admin.post("/cog/ember/hello/predictions", json={"input": {"text": "Ada"}})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert set(body) == COG_FIELDS
    assert (body["status"], body["output"], body["error"]) == ("succeeded", "hello Ada", None)
    assert body["input"] == {"text": "Ada"}
    assert body["version"] == world.versions["hello"]
    assert body["started_at"] and body["completed_at"]
    assert body["metrics"]["predict_time"] >= 0
    # an ordinary Ember prediction of the deployment, readable through Replicate's API
    stored = world.admin.get(f"/v1/predictions/{body['id']}").json()
    assert (stored["output"], stored["deployment"]) == ("hello Ada", "ember/hello")


def test_a_missing_body_or_null_input_is_an_empty_input(world: World) -> None:
    for options in ({}, {"json": {"input": None}}, {"json": {}}):
        answer = world.admin.post("/cog/ember/faults/predictions", **options)
        assert answer.status_code == 200, answer.text
        assert (answer.json()["status"], answer.json()["output"]) == ("succeeded", "ok")


def test_a_failed_prediction_is_a_200_that_says_failed(world: World) -> None:
    answer = world.admin.post("/cog/ember/faults/predictions", json={"input": {"mode": "raise"}})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == "failed"
    assert "the model exploded" in body["error"]
    assert "about to fail" in body["logs"]


def test_output_files_are_data_uris_when_synchronous(world: World) -> None:
    answer = world.admin.post("/cog/ember/squares/predictions", json={"input": {"width": 2}})
    assert answer.status_code == 200, answer.text
    assert answer.json()["output"].startswith("data:image/png;base64,")


def test_put_names_the_prediction_and_is_idempotent(world: World) -> None:
    prediction_id = _unique("put")
    path = f"/cog/ember/faults/predictions/{prediction_id}"
    sleep = {"input": {"mode": "sleep", "seconds": 1.5}}
    first = world.admin.put(path, json=sleep, headers=ASYNC)
    assert first.status_code == 202, first.text
    assert first.json()["id"] == prediction_id
    assert first.json()["status"] in ("starting", "processing")

    # the same id again, while it runs: its state at once (202), not a second prediction
    again = world.admin.put(path, json={"input": {"mode": "other"}})
    assert again.status_code == 202, again.text
    assert (again.json()["id"], again.json()["input"]) == (prediction_id, sleep["input"])
    assert again.json()["status"] in ("starting", "processing")

    assert poll(world.admin, prediction_id)["status"] == "succeeded"
    # and once it has ended: its end, files and all
    ended = world.admin.put(path, json={"input": {"mode": "other"}})
    assert ended.status_code == 200, ended.text
    assert (ended.json()["status"], ended.json()["output"]) == ("succeeded", "sleep")


def test_concurrent_puts_with_one_id_make_one_prediction(world: World) -> None:
    prediction_id = _unique("race")
    answers: list[httpx.Response] = []

    def put(seconds: float) -> None:
        with world.server.client() as client:
            answers.append(
                client.put(
                    f"/cog/ember/faults/predictions/{prediction_id}",
                    json={"input": {"mode": "sleep", "seconds": seconds}},
                )
            )

    threads = [threading.Thread(target=put, args=(0.5 + i / 10,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    codes = sorted(a.status_code for a in answers)
    assert codes[0] == 200 and set(codes) <= {200, 202}, [a.text for a in answers]
    inputs = {a.json()["input"]["seconds"] for a in answers}
    assert len(inputs) == 1 and {a.json()["id"] for a in answers} == {prediction_id}


def test_post_with_an_id_in_the_body_names_the_prediction(world: World) -> None:
    prediction_id = _unique("post")
    body = {"id": prediction_id, "input": {"text": "Bea"}}
    first = world.admin.post("/cog/ember/hello/predictions", json=body)
    assert first.status_code == 200, first.text
    assert (first.json()["id"], first.json()["output"]) == (prediction_id, "hello Bea")
    second = world.admin.post("/cog/ember/hello/predictions", json=body)
    assert second.status_code == 200 and second.json()["created_at"] == first.json()["created_at"]


def test_put_refuses_a_body_id_unlike_the_urls_and_malformed_ids(world: World) -> None:
    mismatch = world.admin.put(
        "/cog/ember/hello/predictions/url-id", json={"id": "body-id", "input": {"text": "x"}}
    )
    [entry] = _detail(mismatch, 422)
    assert entry["loc"] == ["body", "id"] and "must match" in entry["msg"]
    for bad in ("has.dot", "a" * 41, "-leading"):
        answer = world.admin.put(
            f"/cog/ember/hello/predictions/{bad}", json={"input": {"text": "x"}}
        )
        assert _detail(answer, 422)[0]["loc"] == ["body", "id"], bad


def test_invalid_input_is_a_422_in_cogs_shape(world: World) -> None:
    missing = world.admin.post("/cog/ember/hello/predictions", json={"input": {}})
    assert _detail(missing, 422) == [
        {"loc": ["body", "input", "text"], "msg": "Field required", "type": "missing"}
    ]
    wrong_type = world.admin.post("/cog/ember/hello/predictions", json={"input": {"text": 5}})
    assert _detail(wrong_type, 422)[0]["loc"] == ["body", "input", "text"]
    not_an_object = world.admin.post("/cog/ember/hello/predictions", json={"input": "text"})
    assert _detail(not_an_object, 422)[0]["loc"][:2] == ["body", "input"]
    bad_filter = world.admin.post(
        "/cog/ember/hello/predictions",
        json={"input": {"text": "x"}, "webhook_events_filter": ["sometimes"]},
    )
    assert _detail(bad_filter, 422)[0]["loc"][:2] == ["body", "webhook_events_filter"]


# -- respond-async, webhooks, cancel ------------------------------------------------------------


def test_respond_async_answers_202_and_the_webhook_carries_the_end(world: World) -> None:
    with WebhookReceiver() as receiver:
        answer = world.admin.post(
            "/cog/ember/canary/predictions",
            json={
                "input": {"text": "Hook"},
                "webhook": receiver.url,
                "webhook_events_filter": ["completed"],
            },
            headers=ASYNC,
        )
        assert answer.status_code == 202, answer.text
        assert answer.json()["status"] in ("starting", "processing")
        [delivery] = receiver.wait(1, timeout=30)
        time.sleep(0.5)  # the filter holds back start, output and logs deliveries
        assert len(receiver.deliveries) == 1
    body = delivery.json
    assert (body["id"], body["status"]) == (answer.json()["id"], "succeeded")
    assert "".join(body["output"]) == "hello Hook, how are you?"
    assert "token: 'Hook'" in body["logs"]


def test_webhook_events_filter_start_and_completed(world: World) -> None:
    prediction_id = _unique("hooked")
    with WebhookReceiver() as receiver:
        answer = world.admin.put(
            f"/cog/ember/canary/predictions/{prediction_id}",
            json={
                "input": {"text": "Two"},
                "webhook": receiver.url,
                "webhook_events_filter": ["start", "completed"],
            },
        )
        assert answer.status_code == 200 and answer.json()["status"] == "succeeded"
        deliveries = receiver.wait(2, timeout=30)
        time.sleep(0.5)
        assert len(receiver.deliveries) == 2
    assert [d.json["id"] for d in deliveries] == [prediction_id] * 2
    assert deliveries[0].json["status"] == "processing"
    assert deliveries[1].json["status"] == "succeeded"


def test_cancel_a_running_prediction(world: World) -> None:
    prediction_id = _unique("cancel")
    path = f"/cog/ember/faults/predictions/{prediction_id}"
    started = world.admin.put(path, json={"input": {"mode": "sleep", "seconds": 60}}, headers=ASYNC)
    assert started.status_code == 202, started.text
    poll(world.admin, prediction_id, until=frozenset({"processing"}))

    canceled = world.admin.post(f"{path}/cancel")
    assert (canceled.status_code, canceled.json()) == (200, {})
    assert poll(world.admin, prediction_id)["status"] == "canceled"
    # Canceling it again is `{}` again, as in Cog (a retried cancel is no error); an unknown
    # id, or a prediction that ended otherwise (Cog forgets it), is a 404
    for _ in range(2):
        repeated = world.admin.post(f"{path}/cancel")
        assert (repeated.status_code, repeated.json()) == (200, {})
    assert world.admin.post("/cog/ember/faults/predictions/no-such-id/cancel").status_code == 404
    done_id = _unique("cancel-done")
    done = world.admin.put(f"/cog/ember/faults/predictions/{done_id}", json={"input": {}})
    assert (done.status_code, done.json()["status"]) == (200, "succeeded")
    assert world.admin.post(f"/cog/ember/faults/predictions/{done_id}/cancel").status_code == 404
    # and the PUT that made it answers with its end
    again = world.admin.put(path, json={"input": {}})
    assert (again.status_code, again.json()["status"]) == (200, "canceled")


def test_cancel_ends_a_waiting_synchronous_request(world: World) -> None:
    prediction_id = _unique("sync-cancel")
    answers: list[httpx.Response] = []

    def wait_for_it() -> None:
        with world.server.client() as client:
            answers.append(
                client.put(
                    f"/cog/ember/faults/predictions/{prediction_id}",
                    json={"input": {"mode": "sleep", "seconds": 60}},
                )
            )

    waiter = threading.Thread(target=wait_for_it)
    waiter.start()
    deadline = time.monotonic() + 20
    while world.admin.get(f"/v1/predictions/{prediction_id}").status_code == 404:
        assert time.monotonic() < deadline, "the PUT made no prediction"
        time.sleep(0.05)
    poll(world.admin, prediction_id, until=frozenset({"processing"}))
    cancel = world.admin.post(f"/cog/ember/faults/predictions/{prediction_id}/cancel")
    assert cancel.status_code == 200, cancel.text
    waiter.join(timeout=30)
    [answer] = answers
    assert (answer.status_code, answer.json()["status"]) == (200, "canceled")


# -- health-check and openapi.json -----------------------------------------------------------


def test_health_check_follows_the_deployments_replicas(world: World) -> None:
    path = "/cog/ember/faults/health-check"
    body = world.admin.get(path).json()
    assert set(body) == {"status", "setup"} and body["status"] in ("READY", "STARTING")

    prediction_id = _unique("busy")
    started = world.admin.put(
        f"/cog/ember/faults/predictions/{prediction_id}",
        json={"input": {"mode": "sleep", "seconds": 60}},
        headers=ASYNC,
    )
    assert started.status_code == 202, started.text
    poll(world.admin, prediction_id, until=frozenset({"processing"}))
    busy = _wait_status(world, path, "BUSY")  # its one replica's one slot is taken
    assert busy["setup"]["status"] == "succeeded"
    world.admin.post(f"/cog/ember/faults/predictions/{prediction_id}/cancel")
    ready = _wait_status(world, path, "READY")
    assert ready["setup"]["status"] == "succeeded"
    assert {"started_at", "completed_at", "logs", "status"} <= set(ready["setup"])


def test_health_check_runs_the_models_own_healthcheck(world: World) -> None:
    path = "/cog/ember/checked/health-check"
    cog = "/cog/ember/checked/predictions"
    assert world.admin.post(cog, json={"input": {"mode": "ok"}}).json()["status"] == "succeeded"
    healthy = world.admin.get(path).json()
    assert healthy["status"] == "READY" and "user_healthcheck_error" not in healthy
    for mode, error in (
        ("false", "Healthcheck failed: user-defined healthcheck returned False"),
        ("raise", "Healthcheck failed: RuntimeError: the GPU fell off the bus"),
    ):
        assert world.admin.post(cog, json={"input": {"mode": mode}}).status_code == 200
        sick = world.admin.get(path).json()
        assert (sick["status"], sick["user_healthcheck_error"]) == ("UNHEALTHY", error)
    # Polling it replaced nothing (only Ember's own periodic checks count toward that).
    deployment = world.admin.get("/v1/deployments/ember/checked").json()
    assert deployment["status"]["unhealthy"] == {}
    assert world.admin.post(cog, json={"input": {"mode": "ok"}}).status_code == 200
    assert world.admin.get(path).json()["status"] == "READY"


def test_the_request_context_reaches_the_predictor_and_is_never_shown(world: World) -> None:
    path = "/cog/ember/context/predictions"
    context = {"api_token": "secret123", "region": "us-east-1"}
    answer = world.admin.post(path, json={"input": {"text": "hi"}, "context": context})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["output"] == {"text": "hi", "context": context}
    stored = world.admin.get(f"/v1/predictions/{body['id']}").json()
    assert "secret123" not in str({k: v for k, v in stored.items() if k != "output"})
    # none sent: an empty context, as coglet gives it (nothing of Ember's own in it)
    plain = world.admin.post(path, json={"input": {"text": "again"}}).json()
    assert plain["output"] == {"text": "again", "context": {}}
    refused = world.admin.post(path, json={"input": {"text": "x"}, "context": {"n": 1}})
    assert _detail(refused, 422)[0]["loc"] == ["body", "context", "n"]


def _sse(response: httpx.Response) -> list[tuple[str, Any]]:
    """(event, data) of a whole server-sent event stream."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    events = []
    for block in response.text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((fields["event"], json.loads(fields["data"])))
    return events


SSE = {"Accept": "text/event-stream"}


def test_server_sent_events_for_a_model_marked_streaming(world: World) -> None:
    prediction_id = _unique("sse")
    answer = world.admin.put(
        f"/cog/ember/sse/predictions/{prediction_id}", json={"input": {}}, headers=SSE
    )
    events = _sse(answer)
    names = [name for name, _ in events]
    assert names[0] == "start" and names[-1] == "completed"
    assert events[0][1] == {"id": prediction_id, "status": "starting"}
    outputs = [data for name, data in events if name == "output"]
    assert outputs == [{"chunk": "chunk-0", "index": 0}, {"chunk": "chunk-1", "index": 1}]
    logs = "".join(data["data"] for name, data in events if name == "log")
    assert "making chunk 0" in logs and "making chunk 1" in logs
    # each metric as it was recorded, between the outputs (Cog's sse_streaming_metrics)
    metrics = [(name, data) for name, data in events if name in ("metric", "output")]
    assert [(name, data.get("name")) for name, data in metrics] == [
        ("metric", "temperature"),
        ("output", None),
        ("metric", "token_count"),
        ("output", None),
        ("metric", "token_count"),
    ]
    assert metrics[0][1] == {"name": "temperature", "value": 0.7, "mode": "replace"}
    assert metrics[2][1] == {"name": "token_count", "value": 1, "mode": "increment"}
    completed = events[-1][1]
    assert set(completed) == COG_FIELDS
    assert (completed["status"], completed["output"]) == ("succeeded", ["chunk-0", "chunk-1"])
    assert completed["metrics"]["temperature"] == 0.7
    assert completed["metrics"]["token_count"] == 2
    # the schema says so, as Cog's does
    schema = world.admin.get("/cog/ember/sse/openapi.json").json()
    assert schema["paths"]["/predictions"]["post"]["x-cog-streaming"] is True


def test_a_late_subscriber_past_the_history_gets_an_error_not_a_gap(world: World) -> None:
    prediction_id = _unique("late")
    path = f"/cog/ember/sse/predictions/{prediction_id}"
    body = {"input": {"count": 4, "sleep_after": 30}}
    assert world.admin.put(path, json=body, headers=ASYNC).status_code == 202
    deadline = time.monotonic() + 30
    while len(world.admin.get(f"/v1/predictions/{prediction_id}").json()["output"] or []) < 4:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    # start, its logs and 4 outputs happened; the model keeps 2 (COG_STREAM_HISTORY_CAPACITY)
    [(name, data)] = _sse(world.admin.put(path, json=body, headers=SSE))
    assert name == "error"
    assert data == {"error": "SSE stream replay truncated; events were dropped", "skipped": 4}
    world.admin.post(f"{path}/cancel")


def test_server_sent_events_need_the_models_opt_in(world: World) -> None:
    answer = world.admin.post(
        "/cog/ember/iterator/predictions", json={"input": {"count": 2}}, headers=SSE
    )
    assert answer.status_code == 406, answer.text
    assert "Add @cog.streaming to predict() to enable SSE" in answer.json()["error"]
    # the same request without the header streams as JSON, as before
    plain = world.admin.post("/cog/ember/iterator/predictions", json={"input": {"count": 2}})
    assert plain.json()["output"] == [0, 1]


def test_openapi_json_is_the_versions_cog_schema(world: World) -> None:
    answer = world.admin.get("/cog/ember/hello/openapi.json")
    assert answer.status_code == 200, answer.text
    document = answer.json()
    version = world.admin.get(f"/v1/models/ember/hello/versions/{world.versions['hello']}")
    schema = version.json()["openapi_schema"]
    assert {k: v for k, v in document.items() if k != "servers"} == schema
    assert document["servers"] == [{"url": f"{world.server.url}/cog/ember/hello"}]
    assert "text" in document["components"]["schemas"]["Input"]["properties"]
    assert "/predictions" in document["paths"]


def test_the_index_says_where_each_route_is(world: World) -> None:
    answer = world.admin.get("/cog/ember/hello/")
    assert answer.status_code == 200, answer.text
    index = answer.json()
    assert index["predictions_url"] == "/cog/ember/hello/predictions"
    assert index["predictions_idempotent_url"] == "/cog/ember/hello/predictions/{prediction_id}"
    assert world.admin.get(index["healthcheck_url"]).status_code == 200
    assert world.admin.get(index["openapi_url"]).status_code == 200


# -- who may call ---------------------------------------------------------------------------


def _every_route(owner: str, name: str, prediction_id: str) -> list[tuple[str, str, dict]]:
    base = f"/cog/{owner}/{name}"
    body = {"json": {"input": {"text": "x"}}}
    return [
        ("POST", f"{base}/predictions", body),
        ("PUT", f"{base}/predictions/{prediction_id}", body),
        ("POST", f"{base}/predictions/{prediction_id}/cancel", {}),
        ("GET", f"{base}/health-check", {}),
        ("GET", f"{base}/openapi.json", {}),
        ("GET", f"{base}/", {}),
    ]


def test_every_route_needs_a_token(world: World) -> None:
    with httpx.Client(base_url=world.server.url, timeout=30) as anonymous:
        for method, path, options in _every_route("ember", "hello", "any-id"):
            answer = anonymous.request(method, path, **options)
            assert answer.status_code == 401, (method, path, answer.text)


def test_another_owners_deployment_is_not_found(world: World) -> None:
    made = world.admin.post("/cog/ember/hello/predictions", json={"input": {"text": "mine"}})
    ember_prediction = made.json()["id"]
    for method, path, options in _every_route("ember", "hello", ember_prediction):
        answer = world.bob.request(method, path, **options)
        assert answer.status_code == 404, (method, path, answer.text)
        assert "mine" not in answer.text
    assert world.admin.get("/cog/ember/nothing/health-check").status_code == 404

    # Bob's own deployment works for Bob; an id that is taken cannot be his (409, no more)
    own = world.bob.post("/cog/bob/hello/predictions", json={"input": {"text": "Bob"}})
    assert (own.status_code, own.json()["output"]) == (200, "hello Bob")
    taken = world.bob.put(f"/cog/bob/hello/predictions/{ember_prediction}", json={"input": {}})
    assert taken.status_code == 409 and "mine" not in taken.text
    cancel = world.bob.post(f"/cog/bob/hello/predictions/{ember_prediction}/cancel")
    assert cancel.status_code == 404
