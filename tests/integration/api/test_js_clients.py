"""The official JavaScript clients (npm `replicate` and `openai`, installed into tests/js by
scripts/test.sh) against a real `ember serve`, with only the base URL changed: every call
the Python client tests make, plus what the JavaScript clients do differently — they open a
prediction's stream URL without the token, and send a file's metadata as a JSON part."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.paths import MODELS, ROOT
from tests.support.server import TOKEN, EmberServer, running

pytestmark = pytest.mark.timeout(300)

JS = ROOT / "tests" / "js"
DEPLOY = {
    "hello": "cog/hello-world",
    "canary": "cog/canary",
    "document": "cog/constraint-file",
    "faults": "faults/sync",
}
CANARY = ["hello", " ", "Bo", ",", " ", "how", " ", "are", " ", "you", "?"]


def node(script: str, server: EmberServer, **env: str) -> dict[str, Any]:
    """Run one of tests/js's scripts; what each of its calls returned, by name."""
    if not (JS / "node_modules" / "replicate").is_dir():
        pytest.fail("the JavaScript clients are not installed: run bash scripts/test.sh")
    result = subprocess.run(
        ["node", str(JS / script)],
        cwd=JS,
        env={**os.environ, "EMBER_URL": server.url, "EMBER_TOKEN": TOKEN, **env},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmberServer]:
    with running(tmp_path_factory.mktemp("js-clients")) as ember_server:
        yield ember_server


@pytest.fixture(scope="module")
def replicate_js(server: EmberServer, api: httpx.Client) -> dict[str, Any]:
    versions = {
        name: server.deploy(MODELS / path, "ember", name)["id"] for name, path in DEPLOY.items()
    }
    api.post(
        "/v1/deployments",
        json={"name": "hello", "model": "ember/hello", "version": versions["hello"]},
    ).raise_for_status()
    return node("replicate_calls.mjs", server, HELLO_VERSION=versions["hello"])


def ok(results: dict[str, Any], call: str) -> Any:
    """What `call` returned; fails with the error the client threw."""
    assert "ok" in results[call], f"{call}: {results[call].get('error')}"
    return results[call]["ok"]


def test_run_by_model_and_by_version(replicate_js: dict[str, Any]) -> None:
    assert ok(replicate_js, "run") == "hello Ada"
    assert ok(replicate_js, "runByVersion") == "hello Bea"
    assert "".join(ok(replicate_js, "runIterator")) == "hello Cy, how are you?"


def test_create_wait_and_get(replicate_js: dict[str, Any]) -> None:
    done = ok(replicate_js, "createAndWait")
    assert (done["status"], done["output"], done["got"]) == (
        "succeeded",
        "hello waiting",
        "hello waiting",
    )
    assert ok(replicate_js, "modelPrediction") == {"status": "succeeded", "output": "hello m"}


def test_stream_opens_the_capability_url_without_the_token(
    replicate_js: dict[str, Any],
) -> None:
    events = ok(replicate_js, "stream")
    assert [e["data"] for e in events if e["event"] == "output"] == CANARY
    assert events[-1]["event"] == "done"


def test_stream_url_is_for_one_prediction_and_cannot_be_forged(
    server: EmberServer, api: httpx.Client
) -> None:
    first = api.post("/v1/models/ember/hello/predictions", json={"input": {"text": "a"}}).json()
    second = api.post("/v1/models/ember/hello/predictions", json={"input": {"text": "b"}}).json()
    url = first["urls"]["stream"]
    assert "signature=" in url and "expires=" in url
    with httpx.stream("GET", url) as response:  # no token: the link is the permission
        assert response.status_code == 200
        assert b"event: done" in response.read()
    # The signature names one prediction: it does not open another's stream...
    other = url.replace(first["id"], second["id"])
    assert httpx.get(other).status_code == 401
    # ...nor survives tampering, nor an expiry moved later.
    assert httpx.get(url.replace("signature=", "signature=0")).status_code == 401
    expires = url.split("expires=")[1].split("&")[0]
    assert httpx.get(url.replace(expires, str(int(expires) + 3600))).status_code == 401
    # Without any signature, the stream still needs a token.
    bare = url.split("?")[0]
    assert httpx.get(bare).status_code == 401
    assert api.get(bare).status_code == 200


def test_files_create_with_metadata_and_a_file_input(replicate_js: dict[str, Any]) -> None:
    created = ok(replicate_js, "filesCreate")
    assert created["file"]["metadata"] == {"purpose": "test"}
    assert created["file"]["size"] == len("ember reads files")
    assert created["file"]["id"] in created["listed"]
    assert created["got"] == created["file"]["id"]
    assert ok(replicate_js, "fileInput") == "JAVASCRIPT READS FILES"


def test_deployments_models_and_search(replicate_js: dict[str, Any]) -> None:
    deployments = ok(replicate_js, "deployments")
    assert (deployments["status"], deployments["output"]) == ("succeeded", "hello dep")
    assert deployments["deployment"]["current_release"]["model"] == "ember/hello"
    assert "ember/hello" in deployments["listed"]
    models = ok(replicate_js, "models")
    assert models["name"] == "ember/hello"
    assert models["latest"] in models["versions"]
    assert "text" in models["inputs"]
    assert ok(replicate_js, "search") == ["ember/canary"]


def test_cancel_failure_and_pages(replicate_js: dict[str, Any]) -> None:
    assert ok(replicate_js, "cancel") == "canceled"
    assert "the model exploded" in ok(replicate_js, "failing")
    pages = ok(replicate_js, "paginate")
    assert pages and all(size > 0 for size in pages)


def test_hardware_account_and_webhook_secret(replicate_js: dict[str, Any]) -> None:
    assert {"name", "sku"} <= set(ok(replicate_js, "hardware")[0])
    assert ok(replicate_js, "account")["username"] == "ember"
    assert ok(replicate_js, "webhookSecret")["key"].startswith("whsec_")


def test_the_clients_are_the_pinned_official_ones() -> None:
    """The versions scripts/test.sh installs are the ones tests/js/package.json pins."""
    pinned = json.loads((JS / "package.json").read_text())["dependencies"]
    for name, version in pinned.items():
        installed = json.loads((JS / "node_modules" / name / "package.json").read_text())
        assert installed["version"] == version, name


@pytest.fixture(scope="module")
def openai_js(server: EmberServer, api: httpx.Client) -> dict[str, Any]:
    """The calls of the `openai` client, on a predictor with OpenAI's hooks that echoes."""
    version = server.deploy(MODELS / "ember" / "openai-echo", "ember", "echo")["id"]
    api.post(
        "/v1/deployments", json={"name": "echo", "model": "ember/echo", "version": version}
    ).raise_for_status()
    return node("openai_calls.mjs", server, MODEL="ember/echo")


def test_openai_chat_streams_completions_and_embeddings(openai_js: dict[str, Any]) -> None:
    chat = ok(openai_js, "chat")
    assert chat["content"] == "hello js" and chat["usage"]["completion_tokens"] == 2
    streamed = ok(openai_js, "chatStream")
    assert streamed["text"] == "one two three"  # (the echo predictor frames no usage)
    assert ok(openai_js, "completions") == "cba"
    assert ok(openai_js, "embeddings") == [[6.0, 3.0, 1.0], [4.0, 2.0, 1.0]]


def test_openai_models_and_errors(openai_js: dict[str, Any]) -> None:
    models = ok(openai_js, "models")
    assert "ember/echo" in models["ids"] and models["retrieved"] == "ember/echo"
    assert ok(openai_js, "notFound")["status"] == 404


def test_openai_responses_plain_and_streamed(openai_js: dict[str, Any]) -> None:
    """responses.create through the Responses API (translated to the echo's chat hook)."""
    plain = ok(openai_js, "responses")
    assert plain["text"] == "hello responses" and plain["status"] == "completed"
    assert plain["usage"]["output_tokens"] == 2
    streamed = ok(openai_js, "responsesStream")
    assert streamed["text"] == "one two"
    assert streamed["types"] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
