"""The official `replicate` client against a real `ember serve`, changing only `base_url`.

One server per backend (SQLite, PostgreSQL, and SQLite with replicas on a two-node Ray
cluster: `--runtime ray`) for the whole module; the models are deployed once per server. Raw
httpx requests check what the client does not look at: error shapes, `Prefer: wait` answers
and the server-sent event format.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import replicate
from replicate.exceptions import ModelError, ReplicateError
from replicate.helpers import FileOutput
from replicate.pagination import paginate
from replicate.webhook import InvalidSignatureError, Webhooks, WebhookSigningSecret

from tests.support.api import BACKENDS, TERMINAL, poll, replicate_client, serving
from tests.support.paths import MODELS
from tests.support.server import EmberServer
from tests.support.webhooks import WebhookReceiver

pytestmark = pytest.mark.timeout(120)

# model name on the server -> package folder under tests/models
DEPLOY = {
    "hello": "cog/hello-world",
    "canary": "cog/canary",
    "output-model": "cog/output-model",
    "list-output": "cog/list-output",
    "iterator-output": "cog/iterator-output",
    "document": "cog/constraint-file",
    "faults": "faults/sync",
}
CANARY_TOKENS = ["hello", " ", "{}", ",", " ", "how", " ", "are", " ", "you", "?"]
UNAUTHENTICATED = {
    "title": "Unauthenticated",
    "detail": "You did not pass a valid authentication token",
    "status": 401,
}


def canary_tokens(text: str) -> list[str]:
    return [token.format(text) for token in CANARY_TOKENS]


@dataclass
class Env:
    server: EmberServer
    versions: dict[str, str]  # model name -> version id
    client: replicate.Client
    http: httpx.Client  # raw requests with the admin token


@pytest.fixture(scope="module", params=[*BACKENDS, "ray"])
def env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    backend = request.param
    with serving(backend, tmp_path_factory.mktemp(f"api-{backend}")) as server:
        versions = {
            name: server.deploy(MODELS / folder, "ember", name)["id"]
            for name, folder in DEPLOY.items()
        }
        with server.client() as http:
            yield Env(server, versions, replicate_client(server), http)


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """Replicate's error shape: {"title", "detail", "status"} with a matching status code."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert {"title", "detail", "status"} <= set(body), body
    assert body["status"] == status
    assert isinstance(body["title"], str) and body["title"]
    return body


def wait_reload(prediction: Any, timeout: float = 15) -> None:
    """Like Prediction.wait(), but bounded."""
    deadline = time.monotonic() + timeout
    while prediction.status not in TERMINAL:
        assert time.monotonic() < deadline, f"{prediction.id} still {prediction.status}"
        time.sleep(0.1)
        prediction.reload()


# -- client.run ------------------------------------------------------------------------------


def test_run_str_to_str(env: Env) -> None:
    assert env.client.run("ember/hello", input={"text": "Ada"}) == "hello Ada"
    # owner/name:version goes through POST /v1/predictions and GET .../versions/{id}
    version = env.versions["hello"]
    assert env.client.run(f"ember/hello:{version}", input={"text": "Bea"}) == "hello Bea"


def test_models_and_versions_through_the_client(env: Env) -> None:
    model = env.client.models.get("ember/hello")
    assert (model.owner, model.name) == ("ember", "hello")
    assert model.latest_version is not None
    assert model.latest_version.id == env.versions["hello"]
    version = model.versions.get(env.versions["hello"])
    assert "text" in version.openapi_schema["components"]["schemas"]["Input"]["properties"]
    assert env.versions["hello"] in [v.id for v in model.versions.list()]


def test_run_iterator_models(env: Env) -> None:
    output = env.client.run("ember/canary", input={"text": "Ada"})
    assert output == canary_tokens("Ada")
    assert "".join(output) == "hello Ada, how are you?"
    # with a version the client learns the output is an iterator and hands back a generator
    by_version = env.client.run(f"ember/canary:{env.versions['canary']}", input={"text": "Bo"})
    assert list(by_version) == canary_tokens("Bo")
    assert env.client.run("ember/iterator-output", input={"count": 5}) == [0, 1, 4, 9, 16]


def test_run_file_outputs(env: Env) -> None:
    output = env.client.run("ember/output-model", input={"text": "quick fox"})
    assert {k: output[k] for k in ("text", "length", "words")} == {
        "text": "quick fox",
        "length": 9,
        "words": ["quick", "fox"],
    }
    assert isinstance(output["file"], FileOutput)
    assert output["file"].read() == b"QUICK FOX"

    files = env.client.run("ember/list-output", input={"count": 3})
    assert all(isinstance(f, FileOutput) for f in files)
    assert [f.read() for f in files] == [f"file number {i}\n".encode() for i in range(3)]


def test_output_file_urls_are_signed(env: Env) -> None:
    """A polled prediction names its files by signed URLs that work without a token."""
    prediction = env.client.models.predictions.create(model="ember/list-output", input={"count": 2})
    wait_reload(prediction)
    assert prediction.status == "succeeded", prediction.error
    urls = prediction.output
    assert len(urls) == 2
    for i, url in enumerate(urls):
        response = httpx.get(url)  # no Authorization header
        assert response.status_code == 200, response.text
        assert response.content == f"file number {i}\n".encode()
    tampered = urls[0].replace("signature=", "signature=0")
    assert_problem(httpx.get(tampered), 401)


def test_failing_model_raises_model_error(env: Env) -> None:
    with pytest.raises(ModelError) as info:
        env.client.run("ember/faults", input={"mode": "raise"})
    assert "the model exploded" in str(info.value)
    prediction = info.value.prediction
    assert prediction.status == "failed"
    assert "the model exploded" in prediction.error
    assert "about to fail" in prediction.logs


def test_file_input_is_uploaded_and_read(env: Env, tmp_path: Path) -> None:
    document = tmp_path / "note.txt"
    document.write_text("ember reads files")
    with document.open("rb") as handle:
        output = env.client.run("ember/document", input={"document": handle})
    assert output == "EMBER READS FILES"
    # the client uploaded it with POST /v1/files
    uploads = env.http.get("/v1/files").json()["results"]
    assert any(f["name"] == "note.txt" and f["size"] == 17 for f in uploads), uploads


# -- streaming -------------------------------------------------------------------------------


def test_stream_yields_tokens_in_order(env: Env) -> None:
    events = list(env.client.stream("ember/canary", input={"text": "Bo"}))
    outputs = [e for e in events if e.event == e.EventType.OUTPUT]
    assert [str(e) for e in outputs] == canary_tokens("Bo")
    assert "".join(str(e) for e in events) == "hello Bo, how are you?"
    assert events[-1].event == events[-1].EventType.DONE


def sse_events(http: httpx.Client, url: str) -> list[dict[str, str]]:
    """Read a whole event stream; each event as its fields (data lines joined by newlines)."""
    events: list[dict[str, str]] = []
    fields: dict[str, str] = {}
    with http.stream("GET", url, headers={"Accept": "text/event-stream"}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if not line:
                if fields:
                    events.append(fields)
                    fields = {}
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data" and "data" in fields:
                fields["data"] += "\n" + value
            else:
                fields[name] = value
    if fields:
        events.append(fields)
    return events


def assert_sse_format(events: list[dict[str, str]]) -> None:
    assert events, "no events"
    for event in events:
        assert event.get("event") in {"output", "logs", "error", "done"}, event
        assert event.get("id"), f"event without an id: {event}"
    assert len({e["id"] for e in events}) == len(events), "event ids repeat"
    assert events[-1]["event"] == "done"
    assert [e["event"] for e in events].count("done") == 1


def test_sse_raw_format(env: Env) -> None:
    created = env.http.post(
        "/v1/models/ember/canary/predictions", json={"input": {"text": "Cy"}, "stream": True}
    )
    assert created.status_code == 201, created.text
    url = created.json()["urls"]["stream"]
    events = sse_events(env.http, url)
    assert_sse_format(events)
    outputs = [e["data"] for e in events if e["event"] == "output"]
    assert outputs == canary_tokens("Cy")
    logs = "".join(e["data"] for e in events if e["event"] == "logs")
    assert "token: 'Cy'" in logs

    # the stream of a finished prediction replays its output, then says done
    replay = sse_events(env.http, url)
    assert_sse_format(replay)
    assert [e["data"] for e in replay if e["event"] == "output"] == outputs


def test_sse_error_event(env: Env) -> None:
    created = env.http.post(
        "/v1/models/ember/faults/predictions", json={"input": {"mode": "raise"}, "stream": True}
    )
    assert created.status_code == 201, created.text
    events = sse_events(env.http, created.json()["urls"]["stream"])
    assert_sse_format(events)
    errors = [e for e in events if e["event"] == "error"]
    assert len(errors) == 1 and "the model exploded" in errors[0]["data"]


# -- predictions -----------------------------------------------------------------------------


def test_predictions_create_then_wait(env: Env) -> None:
    prediction = env.client.predictions.create(
        version=env.versions["hello"], input={"text": "waiting"}
    )
    assert prediction.status in ("starting", "processing", "succeeded")
    assert prediction.version == env.versions["hello"]
    prediction.wait()
    assert prediction.status == "succeeded"
    assert prediction.output == "hello waiting"
    assert prediction.completed_at is not None
    assert prediction.metrics is not None and "predict_time" in prediction.metrics
    assert env.client.predictions.get(prediction.id).output == "hello waiting"


def test_models_predictions_create(env: Env) -> None:
    prediction = env.client.models.predictions.create(model="ember/hello", input={"text": "m"})
    assert prediction.model == "ember/hello"
    prediction.wait()
    assert (prediction.status, prediction.output) == ("succeeded", "hello m")


def test_cancel_long_prediction(env: Env) -> None:
    running = env.client.models.predictions.create(
        model="ember/faults", input={"mode": "sleep", "seconds": 30}
    )
    waiting = env.client.models.predictions.create(
        model="ember/faults", input={"mode": "sleep", "seconds": 30}
    )
    poll(env.http, running.id, until=frozenset({"processing"}))

    # one still in the queue ends at once; the running one is interrupted
    assert env.client.predictions.cancel(waiting.id).status == "canceled"
    started = time.monotonic()
    env.client.predictions.cancel(running.id)
    wait_reload(running)
    assert running.status == "canceled"
    assert time.monotonic() - started < 10
    assert running.completed_at is not None
    # canceling a finished prediction changes nothing
    assert env.client.predictions.cancel(running.id).status == "canceled"
    # and the replica serves the next prediction
    assert env.client.run("ember/faults", input={"mode": "ok"}) == "ok"


def test_predictions_list_pages(env: Env) -> None:
    created = [
        env.client.predictions.create(version=env.versions["hello"], input={"text": str(i)}).id
        for i in range(105)
    ]
    pages = list(paginate(env.client.predictions.list))
    listed = [p.id for page in pages for p in page.results]
    assert len(pages) >= 2, "105 predictions should not fit one page"
    assert len(listed) == len(set(listed)), "a prediction is listed twice"
    assert set(created) <= set(listed)
    positions = [listed.index(i) for i in created]
    assert positions == sorted(positions, reverse=True), "not newest first"


# -- Prefer: wait ----------------------------------------------------------------------------


def test_prefer_wait_runs_out_answers_starting(env: Env) -> None:
    started = time.monotonic()
    response = env.http.post(
        "/v1/models/ember/faults/predictions",
        json={"input": {"mode": "sleep", "seconds": 2.5}},
        headers={"Prefer": "wait=1"},
    )
    elapsed = time.monotonic() - started
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["status"] == "starting"
    assert body["output"] is None
    assert response.headers["preference-applied"] == "wait=1"
    assert 0.9 <= elapsed < 2.4
    # it goes on running; cancel it so the next test does not queue behind it
    env.http.post(f"/v1/predictions/{body['id']}/cancel")
    assert poll(env.http, body["id"])["status"] == "canceled"


def test_run_with_short_wait_polls_to_completion(env: Env) -> None:
    started = time.monotonic()
    output = env.client.run("ember/faults", input={"mode": "sleep", "seconds": 2.5}, wait=1)
    assert output == "sleep"
    assert time.monotonic() - started >= 2.4


def test_prefer_wait_out_of_range_is_400(env: Env) -> None:
    response = env.http.post(
        "/v1/models/ember/hello/predictions",
        json={"input": {"text": "x"}},
        headers={"Prefer": "wait=1000"},
    )
    body = assert_problem(response, 400)
    assert "wait" in body["detail"]


# -- errors ----------------------------------------------------------------------------------


def test_invalid_input_is_422_with_cog_detail(env: Env) -> None:
    response = env.http.post("/v1/models/ember/faults/predictions", json={"input": {"mode": 5}})
    body = assert_problem(response, 422)
    [item] = body["detail"]
    assert item["loc"] == ["body", "input", "mode"]
    assert isinstance(item["msg"], str) and item["msg"]
    assert isinstance(item["type"], str) and item["type"]

    missing = env.http.post("/v1/predictions", json={"version": env.versions["hello"], "input": {}})
    [item] = assert_problem(missing, 422)["detail"]
    assert item["loc"] == ["body", "input", "text"]

    with pytest.raises(ReplicateError) as info:
        env.client.run("ember/hello", input={"text": ["not", "a", "string"]})
    assert info.value.status == 422


def test_unknown_model_is_404(env: Env) -> None:
    with pytest.raises(ReplicateError) as info:
        env.client.run("ember/no-such-model", input={})
    assert info.value.status == 404
    assert_problem(env.http.post("/v1/models/ember/no-such-model/predictions", json={}), 404)
    assert_problem(env.http.get("/v1/predictions/nosuchprediction"), 404)
    with pytest.raises(ReplicateError) as info:
        env.client.deployments.get("ember/no-such-deployment")
    assert info.value.status == 404


def test_missing_or_wrong_token_is_401(env: Env) -> None:
    url = f"{env.server.url}/v1/models/ember/hello/predictions"
    for headers in ({}, {"Authorization": "Bearer wrong-token"}):
        response = httpx.post(url, json={"input": {"text": "x"}}, headers=headers)
        assert assert_problem(response, 401) == UNAUTHENTICATED
    with pytest.raises(ReplicateError) as info:
        replicate_client(env.server, token="wrong-token").run("ember/hello", input={"text": "x"})
    assert info.value.status == 401
    assert info.value.title == "Unauthenticated"


# -- deployments -----------------------------------------------------------------------------


def test_deployments_create_get_update_predict(env: Env) -> None:
    version = env.versions["hello"]
    created = env.client.deployments.create(
        name="hello-prod",
        model="ember/hello",
        version=version,
        hardware="cpu",
        min_instances=0,
        max_instances=1,
    )
    assert (created.owner, created.name) == ("ember", "hello-prod")
    release = created.current_release
    assert release is not None
    assert (release.number, release.model, release.version) == (1, "ember/hello", version)
    assert release.configuration.hardware == "cpu"
    assert (release.configuration.min_instances, release.configuration.max_instances) == (0, 1)

    deployment = env.client.deployments.get("ember/hello-prod")
    assert deployment.current_release is not None
    assert deployment.current_release.number == 1
    prediction = deployment.predictions.create(input={"text": "deployed"})
    wait_reload(prediction)
    assert (prediction.status, prediction.output) == ("succeeded", "hello deployed")

    updated = env.client.deployments.update("ember", "hello-prod", min_instances=1, max_instances=2)
    assert updated.current_release is not None
    assert updated.current_release.number == 2
    assert updated.current_release.version == version
    configuration = updated.current_release.configuration
    assert (configuration.min_instances, configuration.max_instances) == (1, 2)
    again = env.client.deployments.get("ember/hello-prod").current_release
    assert again is not None and again.number == 2

    prediction = env.client.deployments.predictions.create(
        deployment="ember/hello-prod", input={"text": "again"}
    )
    wait_reload(prediction)
    assert (prediction.status, prediction.output) == ("succeeded", "hello again")
    assert "hello-prod" in [d.name for d in env.client.deployments.list().results]

    assert env.client.deployments.delete("ember", "hello-prod")
    with pytest.raises(ReplicateError) as info:
        env.client.deployments.get("ember/hello-prod")
    assert info.value.status == 404


# -- webhooks --------------------------------------------------------------------------------


def test_completed_webhook_is_signed(env: Env) -> None:
    with WebhookReceiver() as receiver:
        prediction = env.client.models.predictions.create(
            model="ember/canary",
            input={"text": "Hook"},
            webhook=receiver.url,
            webhook_events_filter=["completed"],
        )
        wait_reload(prediction)
        [delivery] = receiver.wait(1)
        time.sleep(0.3)  # the filter holds back start/output/logs calls
        assert len(receiver.deliveries) == 1

    body = delivery.json
    assert body["id"] == prediction.id
    assert body["status"] == "succeeded"
    assert body["output"] == canary_tokens("Hook")
    assert body["completed_at"] is not None

    secret = env.client.webhooks.default.secret()
    raw = env.http.get("/v1/webhooks/default/secret").json()
    assert raw["key"] == secret.key and secret.key.startswith("whsec_")
    assert (
        Webhooks.validate(
            headers=delivery.headers, body=delivery.body.decode(), secret=secret, tolerance=300
        )
        is None
    )
    with pytest.raises(InvalidSignatureError):
        Webhooks.validate(
            headers=delivery.headers,
            body=delivery.body.decode().replace("Hook", "Hack"),
            secret=WebhookSigningSecret(key=secret.key),
        )
