"""An accepted prediction survives `kill -9` of `ember serve`.

Twenty predictions are accepted (201 without `Prefer: wait`, so each is committed before the
answer) and queue on one replica. The server is killed while one of them runs, then started
again on the same data dir and database: every prediction succeeds, in order; the one that
was running had shown no output, so it runs again (its logs say Ember restarted). With
`prediction_retries` 0 it fails instead, saying so, and its completed webhook is still sent.
Also here: what a restart must keep besides the records (webhooks, token streams).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from replicate.webhook import Webhooks, WebhookSigningSecret

from tests.support.api import BACKENDS, TERMINAL, poll, replicate_client, serving
from tests.support.paths import MODELS
from tests.support.processes import child_pids, cmdline, wait_gone
from tests.support.server import print_log
from tests.support.webhooks import WebhookReceiver

pytestmark = pytest.mark.timeout(90)

COUNT = 20
SECONDS = 0.3  # each prediction's run time: they queue behind each other
KILL_WHILE_RUNNING = 3  # the index of the prediction running when the server dies


@pytest.mark.parametrize("backend", BACKENDS)
def test_kill_9_loses_no_accepted_prediction(backend: str, tmp_path: Path) -> None:
    with serving(backend, tmp_path / "ember") as server:
        server.deploy(MODELS / "faults" / "sync", "ember", "faults")
        with server.client() as http:
            ids = []
            for _ in range(COUNT):
                response = http.post(
                    "/v1/models/ember/faults/predictions",
                    json={"input": {"mode": "sleep", "seconds": SECONDS}},
                )
                assert response.status_code == 201, response.text
                assert response.json()["status"] == "starting"
                ids.append(response.json()["id"])

            # kill while prediction KILL_WHILE_RUNNING runs (it has ~0.3 s to go)
            running = ids[KILL_WHILE_RUNNING]
            deadline = time.monotonic() + 20
            while (status := http.get(f"/v1/predictions/{running}").json()["status"]) not in (
                "processing",
                *TERMINAL,
            ):
                assert time.monotonic() < deadline, f"{running} never started"
                time.sleep(0.01)
            assert status == "processing", f"{running} ended before the kill could happen"
            before = {i: http.get(f"/v1/predictions/{i}").json()["status"] for i in ids}
            time.sleep(0.03)  # let the group-commit writer record that it started
            assert server.process is not None
            replicas = [
                pid for pid in child_pids(server.process.pid) if "ember.worker" in cmdline(pid)
            ]
            server.kill()

        assert replicas, "no replica process was found under ember serve"
        assert not wait_gone(replicas, timeout=10), "replicas outlived their killed server"
        assert before[running] == "processing"
        assert all(before[i] == "succeeded" for i in ids[:KILL_WHILE_RUNNING]), before

        server.start()  # same port, data dir and database; a new process
        try:
            final = {}
            with server.client() as http:
                deadline = time.monotonic() + 60
                for prediction_id in ids:
                    while True:
                        response = http.get(f"/v1/predictions/{prediction_id}")
                        assert response.status_code == 200, f"{prediction_id} lost: {response.text}"
                        body = response.json()
                        if body["status"] in TERMINAL:
                            final[prediction_id] = body
                            break
                        assert time.monotonic() < deadline, f"{prediction_id} is {body['status']}"
                        time.sleep(0.05)
        except BaseException:
            print_log(server)
            raise

    statuses = {i: final[i]["status"] for i in ids}
    assert set(statuses.values()) == {"succeeded"}, statuses
    assert all(final[i]["output"] == "sleep" for i in ids)
    # the one running when Ember died had shown no output: it ran again, saying why
    assert final[running]["metrics"]["retries"] == 1
    assert "Ember restarted while this prediction was running" in final[running]["logs"]
    assert all("retries" not in final[i]["metrics"] for i in ids if i != running)
    # the re-queued ones ran in the order they were accepted, the interrupted one first
    requeued = ids[KILL_WHILE_RUNNING:]
    starts = [final[i]["started_at"] for i in requeued]
    assert starts == sorted(starts), "re-queued predictions ran out of order"


def test_prediction_failed_by_restart_sends_its_completed_webhook(tmp_path: Path) -> None:
    """With prediction_retries 0, the running prediction fails saying Ember restarted."""
    with serving("sqlite", tmp_path / "ember") as server, WebhookReceiver() as receiver:
        server.deploy(MODELS / "faults" / "sync", "ember", "faults")
        with server.client() as http:
            made = http.post(
                "/v1/deployments",
                json={"name": "faults", "model": "ember/faults", "prediction_retries": 0},
            )
            assert made.status_code == 201, made.text
            response = http.post(
                "/v1/models/ember/faults/predictions",
                json={
                    "input": {"mode": "sleep", "seconds": 30},
                    "webhook": receiver.url,
                    "webhook_events_filter": ["completed"],
                },
            )
            assert response.status_code == 201, response.text
            prediction_id = response.json()["id"]
            poll(http, prediction_id, until=frozenset({"processing"}))
            time.sleep(0.05)
        server.kill()
        server.start()
        with server.client() as http:
            final = poll(http, prediction_id)
            assert final["status"] == "failed"
            assert "restart" in final["error"].lower()
            secret = http.get("/v1/webhooks/default/secret").json()["key"]
        [delivery] = receiver.wait(1, timeout=2)
    assert delivery.json["id"] == prediction_id
    assert delivery.json["status"] == "failed"
    Webhooks.validate(
        headers=delivery.headers,
        body=delivery.body.decode(),
        secret=WebhookSigningSecret(key=secret),
    )


def test_finished_token_stream_replays_after_restart(tmp_path: Path) -> None:
    with serving("sqlite", tmp_path / "ember") as server:
        server.deploy(MODELS / "cog" / "canary", "ember", "canary")
        client = replicate_client(server)
        prediction = client.models.predictions.create(
            model="ember/canary", input={"text": "Ada"}, wait=True
        )
        assert prediction.status == "succeeded"
        server.stop()  # a clean restart is enough
        server.start()
        events = list(client.predictions.get(prediction.id).stream())
    outputs = [str(e) for e in events if e.event == e.EventType.OUTPUT]
    assert "".join(outputs) == "hello Ada, how are you?"
    assert len(outputs) == 11
