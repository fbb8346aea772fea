"""Tenants apart, through a real `ember serve`: token scopes and owners on every endpoint,
secrets never stored or shown in clear, and per-token rate limits.

Alice (owner `alice`) deploys models and makes a prediction and a file; Bob (owner `bob`)
tries every endpoint on them with his deploy and predict tokens. Each must answer as if
Alice's objects did not exist (404), and no listing may show them. Admin-only endpoints
refuse both with 403.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from replicate.webhook import InvalidSignatureError, Webhooks, WebhookSigningSecret

from tests.support.paths import model_path
from tests.support.server import TOKEN, EmberServer, package_archive, running
from tests.support.webhooks import WebhookReceiver

pytestmark = pytest.mark.timeout(180)

SECRET = "sk-live-7f3a9c2e41d84b6f"


@dataclass
class World:
    server: EmberServer
    tokens: dict[str, str]  # "alice", "alice-predict", "bob", "bob-predict" -> token
    version: str  # of alice/squares
    prediction: str  # alice's, with an output file
    output: str  # that output's URL
    file: str  # alice's uploaded file id

    def client(self, who: str) -> httpx.Client:
        return self.server.client(self.tokens[who] if who != "admin" else TOKEN)


def _deploy(client: httpx.Client, owner: str, name: str, package: str) -> str:
    """Model, version and deployment `owner/name`, made with `client`'s token."""
    created = client.post("/v1/models", json={"owner": owner, "name": name})
    assert created.status_code == 201, created.text
    version = client.post(
        f"/v1/models/{owner}/{name}/versions",
        files={"package": ("p.tar.gz", package_archive(model_path("ember", package)))},
        timeout=300,
    )
    assert version.status_code == 201, version.text
    deployment = client.post("/v1/deployments", json={"name": name, "model": f"{owner}/{name}"})
    assert deployment.status_code == 201, deployment.text
    return version.json()["id"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with running(tmp_path_factory.mktemp("ember-isolation")) as server:
        tokens = {}
        with server.client() as admin:
            for owner in ("alice", "bob"):
                for scope in ("deploy", "predict"):
                    made = admin.post(
                        "/v1/tokens",
                        json={"name": f"{owner}-{scope}", "owner": owner, "scope": scope},
                    )
                    assert made.status_code == 201, made.text
                    key = owner if scope == "deploy" else f"{owner}-predict"
                    tokens[key] = made.json()["token"]
        with server.client(tokens["alice"]) as alice:
            version = _deploy(alice, "alice", "squares", "image-out")
            _deploy(alice, "alice", "echo", "openai-echo")
            _deploy(alice, "alice", "careless", "secret-logger")
            made = alice.post(
                "/v1/deployments/alice/squares/predictions",
                json={"input": {"width": 2}},
                headers={"Prefer": "wait=60"},
            ).json()
            assert made["status"] == "succeeded", made
            output = alice.get(f"/v1/predictions/{made['id']}").json()["output"]  # its link
            uploaded = alice.post("/v1/files", files={"content": ("notes.txt", b"alice's")})
            assert uploaded.status_code == 201, uploaded.text
        yield World(server, tokens, version, made["id"], output, uploaded.json()["id"])


def _bob_calls(world: World) -> list[tuple[str, str, dict]]:
    """Every endpoint, aimed at Alice's objects."""
    p, f, v = world.prediction, world.file, world.version
    output_path = httpx.URL(world.output).path
    archive = {"files": {"package": ("p.tar.gz", package_archive(model_path("ember", "function")))}}
    return [
        ("GET", "/v1/models/alice/squares", {}),
        ("DELETE", "/v1/models/alice/squares", {}),
        ("GET", "/v1/models/alice/squares/versions", {}),
        ("GET", f"/v1/models/alice/squares/versions/{v}", {}),
        ("POST", "/v1/models/alice/squares/versions", archive),
        ("POST", "/v1/models/alice/squares/predictions", {"json": {"input": {}}}),
        ("POST", "/v1/predictions", {"json": {"version": v, "input": {}}}),
        ("POST", "/v1/predictions", {"json": {"version": f"alice/squares:{v}", "input": {}}}),
        ("GET", "/v1/deployments/alice/squares", {}),
        ("PATCH", "/v1/deployments/alice/squares", {"json": {"max_instances": 3}}),
        ("DELETE", "/v1/deployments/alice/squares", {}),
        ("GET", "/v1/deployments/alice/squares/timeseries", {}),
        ("POST", "/v1/deployments/alice/squares/predictions", {"json": {"input": {}}}),
        ("POST", "/v1/deployments", {"json": {"name": "mine", "model": "alice/squares"}}),
        ("GET", f"/v1/predictions/{p}", {}),
        ("POST", f"/v1/predictions/{p}/cancel", {}),
        ("GET", f"/v1/predictions/{p}/stream", {}),
        ("GET", output_path, {}),  # with a token but without the link's signature
        ("GET", f"/v1/files/{f}", {}),
        ("GET", f"/v1/files/{f}/download", {}),
        ("DELETE", f"/v1/files/{f}", {}),
        ("GET", "/v1/models/alice/echo", {}),
        ("GET", "/v1/models/echo-chat", {}),  # the OpenAI alias of alice/echo
        (
            "POST",
            "/v1/chat/completions",
            {"json": {"model": "alice/echo", "messages": [{"role": "user", "content": "hi"}]}},
        ),
        (
            "POST",
            "/v1/chat/completions",
            {"json": {"model": "echo-chat", "messages": [{"role": "user", "content": "hi"}]}},
        ),
    ]


@pytest.mark.parametrize("who", ["bob", "bob-predict"])
def test_another_owner_cannot_see_or_touch_anything(world: World, who: str) -> None:
    with world.client(who) as bob:
        for method, path, options in _bob_calls(world):
            answer = bob.request(method, path, **options)
            # Making a deployment is refused for the scope before the model is looked at.
            scoped = who == "bob-predict" and path == "/v1/deployments"
            expected = 403 if scoped else 404
            assert answer.status_code == expected, (method, path, answer.status_code, answer.text)
            assert "alice's" not in answer.text
        assert "alice" not in bob.get("/v1/models").text
        searched = bob.request("QUERY", "/v1/models", content="squares")
        assert searched.status_code == 200 and searched.json()["results"] == []
        assert "alice" not in bob.get("/v1/deployments").text
        assert world.prediction not in bob.get("/v1/predictions").text
        assert world.file not in bob.get("/v1/files").text
    with world.client("alice") as alice:  # and it all still exists, untouched
        assert alice.get(f"/v1/files/{world.file}/download").content == b"alice's"
        assert (
            alice.get("/v1/deployments/alice/squares").json()["current_release"]["configuration"][
                "max_instances"
            ]
            == 1
        )
        assert alice.get(f"/v1/predictions/{world.prediction}").json()["status"] == "succeeded"


@pytest.mark.parametrize("who", ["alice", "alice-predict", "bob", "bob-predict"])
def test_admin_endpoints_refuse_other_scopes(world: World, who: str) -> None:
    with world.client(who) as client:
        for method, path, options in [
            ("GET", "/v1/tokens", {}),
            ("POST", "/v1/tokens", {"json": {"name": "x"}}),
            ("DELETE", "/v1/tokens/tok_0", {}),
            ("GET", "/v1/costs", {}),
            ("PATCH", "/v1/prices/cpu", {"json": {"per_second": 1}}),
            ("GET", "/v1/budgets", {}),
            (
                "POST",
                "/v1/budgets",
                {
                    "json": {
                        "scope": "deployment",
                        "target": "alice/squares",
                        "period": "day",
                        "limit_usd": 1,
                    }
                },
            ),
            ("GET", "/v1/deployments/alice/squares/advice", {}),
        ]:
            answer = client.request(method, path, **options)
            assert answer.status_code == 403, (method, path, answer.status_code, answer.text)
            assert "admin" in answer.json()["detail"]


def test_a_predict_token_runs_and_reads_but_cannot_change(world: World) -> None:
    with world.client("alice-predict") as client:
        assert client.get("/v1/account").json() == {
            "type": "organization",
            "username": "alice",
            "name": "alice",
            "github_url": None,
            "scope": "predict",
        }
        ran = client.post(
            "/v1/deployments/alice/squares/predictions",
            json={"input": {"width": 1}},
            headers={"Prefer": "wait=60"},
        )
        assert ran.status_code == 201 and ran.json()["status"] == "succeeded", ran.text
        assert client.get(f"/v1/predictions/{world.prediction}").status_code == 200
        for method, path, options in [
            ("PATCH", "/v1/deployments/alice/squares", {"json": {"max_instances": 2}}),
            ("DELETE", "/v1/deployments/alice/squares", {}),
            ("DELETE", "/v1/models/alice/squares", {}),
            ("POST", "/v1/models", {"json": {"owner": "alice", "name": "new"}}),
            ("POST", "/v1/deployments", {"json": {"name": "new", "model": "alice/squares"}}),
        ]:
            answer = client.request(method, path, **options)
            assert answer.status_code == 403, (method, path, answer.text)
            assert "scope 'deploy'" in answer.json()["detail"]


def test_another_owners_upload_cannot_be_fetched_through_an_input_url(world: World) -> None:
    """Issue 18: Ember signs every link to an uploaded file in an input for the replica, so
    Bob could name Alice's file URL in a text input of his own echo model and read her file
    through the signed link it echoed back."""
    with world.client("bob") as bob:
        _deploy(bob, "bob", "echo", "openai-echo")
        alices = f"{world.server.url}/v1/files/{world.file}"
        refused = bob.post(
            "/v1/deployments/bob/echo/predictions",
            json={"input": {"text": alices}},
            headers={"Prefer": "wait=60"},
        )
        assert refused.status_code == 422, refused.text
        assert refused.json()["detail"][0]["loc"] == ["body", "input", "text"]
        assert f"file {world.file} not found" in refused.text
        own = bob.post("/v1/files", files={"content": ("mine.txt", b"bob's")}).json()
        echoed = bob.post(
            "/v1/deployments/bob/echo/predictions",
            json={"input": {"text": own["urls"]["get"]}},
            headers={"Prefer": "wait=60"},
        )
        assert echoed.status_code == 201 and echoed.json()["status"] == "succeeded", echoed.text
        signed = "".join(echoed.json()["output"]).strip()
        assert httpx.get(signed).content == b"bob's"  # his own file still goes through


def test_a_deploy_token_cannot_create_for_another_owner(world: World) -> None:
    with world.client("bob") as bob:
        answer = bob.post("/v1/models", json={"owner": "alice", "name": "planted"})
        assert answer.status_code == 403 and "'bob'" in answer.json()["detail"], answer.text


def test_a_public_model_runs_for_anyone_on_its_version_not_the_owners_deployment(
    world: World,
) -> None:
    with world.client("admin") as admin:
        made = admin.post(
            "/v1/models", json={"owner": "alice", "name": "shared", "visibility": "public"}
        )
        assert made.status_code == 201, made.text
        upload = admin.post(
            "/v1/models/alice/shared/versions",
            files={"package": ("p.tar.gz", package_archive(model_path("ember", "image-out")))},
        )
        assert upload.status_code == 201, upload.text
    with world.client("bob-predict") as bob:
        assert bob.get("/v1/models/alice/shared").status_code == 200
        assert "alice/shared" in bob.get("/v1/models").text
        ran = bob.post(
            "/v1/models/alice/shared/predictions",
            json={"input": {"width": 1}},
            headers={"Prefer": "wait=60"},
        ).json()
        assert ran["status"] == "succeeded" and "deployment" not in ran, ran
        deadline = time.monotonic() + 10  # the list reads the database: written just after
        while ran["id"] not in bob.get("/v1/predictions").text:
            assert time.monotonic() < deadline, "Bob's prediction is not in his list"
            time.sleep(0.05)
    with world.client("alice") as alice:  # Bob's prediction is Bob's
        assert alice.get(f"/v1/predictions/{ran['id']}").status_code == 404
        assert alice.delete("/v1/models/alice/shared").status_code == 204


def test_secret_inputs_are_sealed_in_the_database_and_redacted_everywhere(world: World) -> None:
    with world.client("alice") as alice:
        ran = alice.post(
            "/v1/deployments/alice/careless/predictions",
            json={"input": {"api_key": SECRET, "text": "hello"}},
            headers={"Prefer": "wait=60"},
        ).json()
        failed = alice.post(
            "/v1/deployments/alice/careless/predictions",
            json={"input": {"api_key": SECRET, "fail": True}},
            headers={"Prefer": "wait=60"},
        ).json()
        echoed = alice.post(
            "/v1/deployments/alice/careless/predictions",
            json={"input": {"api_key": SECRET, "echo": True}},
            headers={"Prefer": "wait=60"},
        ).json()
        fetched = alice.get(f"/v1/predictions/{ran['id']}").json()
        listed = alice.get("/v1/predictions").text
    assert ran["status"] == "succeeded" and failed["status"] == "failed"
    # Issue 18: outputs are scrubbed like logs and errors (a model may echo its key).
    assert echoed["output"] == "the key was **********", echoed
    assert ran["output"].startswith("hello: key sha256 ")  # the model got the real key
    for shown in (ran, failed, echoed, fetched):
        assert shown["input"]["api_key"] == "**********"
        assert SECRET not in str(shown)
    assert "calling the upstream API with key **********" in ran["logs"]
    assert "upstream refused key **********" in failed["error"]
    assert SECRET not in listed
    world.server.stop()  # everything flushed: the database file holds no secret in clear
    try:
        database = (world.server.data_dir / "ember.db").read_bytes()
        for wal in world.server.data_dir.glob("ember.db-*"):
            database += wal.read_bytes()
        assert SECRET.encode() not in database
        with sqlite3.connect(world.server.data_dir / "ember.db") as db:
            stored = {
                row[0]
                for row in db.execute(
                    "select value from settings where key in ('webhook_secret', 'url_signing_key')"
                )
            }
            hashes = {row[0] for row in db.execute("select hash from tokens")}
        for token in world.tokens.values():
            assert token.encode() not in database
        assert len(stored) == 2 and all(v.startswith("gAAAAA") for v in stored), stored
        assert len(hashes) == 4 and all(len(h) == 64 for h in hashes)
    finally:
        world.server.start()
    with world.client("alice") as alice:  # and read back after the restart, still redacted
        again = alice.get(f"/v1/predictions/{ran['id']}").json()
        assert again["input"]["api_key"] == "**********" and SECRET not in str(again)
        secret = alice.get("/v1/webhooks/default/secret").json()["key"]
        assert secret.startswith("whsec_") and secret.encode() not in database


def test_each_account_signs_its_webhooks_with_its_own_secret(world: World) -> None:
    with world.client("alice-predict") as alice, world.client("bob-predict") as bob:
        alice_secret = alice.get("/v1/webhooks/default/secret").json()["key"]
        bob_secret = bob.get("/v1/webhooks/default/secret").json()["key"]
        assert alice_secret != bob_secret
        assert alice.get("/v1/webhooks/default/secret").json()["key"] == alice_secret
        with WebhookReceiver() as receiver:
            made = alice.post(
                "/v1/deployments/alice/squares/predictions",
                json={"input": {}, "webhook": receiver.url, "webhook_events_filter": ["completed"]},
            )
            assert made.status_code == 201, made.text
            [delivery] = receiver.wait(1, timeout=30)
    body = delivery.body.decode()
    Webhooks.validate(
        headers=delivery.headers, body=body, secret=WebhookSigningSecret(key=alice_secret)
    )
    with pytest.raises(InvalidSignatureError):
        Webhooks.validate(
            headers=delivery.headers, body=body, secret=WebhookSigningSecret(key=bob_secret)
        )


def test_a_token_past_its_rate_limit_gets_429_and_others_do_not(world: World) -> None:
    with world.client("admin") as admin:
        made = admin.post(
            "/v1/tokens",
            json={"name": "slow", "owner": "alice", "scope": "predict", "rate_limit": "3/min"},
        )
        assert made.status_code == 201 and made.json()["rate_limit"] == "3/min", made.text
        refused = admin.post("/v1/tokens", json={"name": "x", "rate_limit": "fast"})
        assert refused.status_code == 422 and "600/min" in refused.text
    with world.server.client(made.json()["token"]) as slow:
        answers = [slow.get("/v1/account") for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert int(answers[-1].headers["Retry-After"]) >= 1
    assert "3/min" in answers[-1].json()["detail"]
    with world.client("alice-predict") as other:
        assert all(other.get("/v1/account").status_code == 200 for _ in range(10))
