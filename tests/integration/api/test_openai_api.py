"""OpenAI's API through the official `openai` client, base URL changed only: a real `ember
serve` and a real replica of a predictor that implements the OpenAI hooks itself
(tests/models/ember/openai-echo), so the gateway's face is tested without a model. The real
engines (llama.cpp, sentence-transformers) are exercised in test_openai_engines.py."""

from __future__ import annotations

import base64
import os
import struct
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.support.api import serving
from tests.support.paths import MODELS
from tests.support.server import TOKEN, EmberServer

NAME = "ember/echo"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmberServer]:
    with serving("sqlite", tmp_path_factory.mktemp("openai")) as server:
        version = server.deploy(MODELS / "ember" / "openai-echo", "ember", "echo")["id"]
        with server.client() as http:
            response = http.post(
                "/v1/deployments",
                json={
                    "name": "echo",
                    "model": NAME,
                    "version": version,
                    "hardware": "cpu",
                    "min_instances": 0,
                    "max_instances": 1,
                },
            )
            assert response.status_code == 201, response.text
        yield server


@pytest.fixture(scope="module")
def client(server: EmberServer) -> openai.OpenAI:
    return openai.OpenAI(api_key=TOKEN, base_url=f"{server.url}/v1", max_retries=0)


def test_chat_plain(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(
        model=NAME, messages=[{"role": "user", "content": "hello there world"}]
    )
    assert answer.object == "chat.completion"
    assert answer.model == NAME
    assert answer.choices[0].message.content == "hello there world"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None and answer.usage.completion_tokens == 3


def test_chat_stream_arrives_as_generated(client: openai.OpenAI) -> None:
    started = time.monotonic()
    arrivals: list[float] = []
    pieces: list[str] = []
    stream = client.chat.completions.create(
        model=NAME,
        messages=[{"role": "user", "content": "one two three four"}],
        stream=True,
        extra_body={"delay": 0.3},
    )
    for chunk in stream:
        assert chunk.object == "chat.completion.chunk"
        arrivals.append(time.monotonic() - started)
        pieces.append(chunk.choices[0].delta.content or "")
    assert "".join(pieces) == "one two three four"
    # Each word is produced 0.3 s after the last: a buffered answer would arrive at once.
    assert arrivals[-1] - arrivals[1] > 0.6


def test_stream_is_sse_with_done(server: EmberServer) -> None:
    with (
        server.client() as http,
        http.stream(
            "POST",
            "/v1/chat/completions",
            json={"model": NAME, "messages": [{"role": "user", "content": "a b"}], "stream": True},
        ) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    assert len(lines) == 5  # role, "a", " b", finish, [DONE]


def test_aliases_and_bare_names(client: openai.OpenAI) -> None:
    for name in ("echo-chat", "echo"):
        answer = client.chat.completions.create(
            model=name, messages=[{"role": "user", "content": "x"}]
        )
        assert answer.choices[0].message.content == "x"


def test_completions_and_embeddings(client: openai.OpenAI) -> None:
    completion = client.completions.create(model=NAME, prompt="abc")
    assert completion.object == "text_completion"
    assert completion.choices[0].text == "cba"
    # The client asks for base64 by default and decodes it: both formats round-trip.
    embedded = client.embeddings.create(model=NAME, input=["banana", "kiwi"])
    assert [d.embedding for d in embedded.data] == [[6.0, 3.0, 1.0], [4.0, 2.0, 1.0]]
    floats = client.embeddings.create(model=NAME, input="banana", encoding_format="float")
    assert floats.data[0].embedding == [6.0, 3.0, 1.0]


def test_models_list_and_retrieve(client: openai.OpenAI, server: EmberServer) -> None:
    ids = [model.id for model in client.models.list()]
    assert ids[0] == NAME and {"echo", "echo-chat"} <= set(ids)
    assert client.models.retrieve(NAME).id == NAME
    assert client.models.retrieve("echo-chat").owned_by == "ember"
    # The same route still answers the Replicate client's shape.
    with server.client() as http:
        body = http.get("/v1/models").json()
    assert "results" in body and body["object"] == "list"


def test_unknown_model_is_openai_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(
            model="ember/nope", messages=[{"role": "user", "content": "x"}]
        )
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["code"] == "model_not_found" and "ember/nope" in error["message"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"temperature": 5}, "temperature"),
        ({"messages": []}, "messages"),
        ({"n": 0}, "n"),
        ({"max_tokens": 1000}, "max_tokens"),  # refused by the predictor itself
    ],
)
def test_bad_parameter_is_openai_400(server: EmberServer, body: dict, param: str) -> None:
    request = {"model": NAME, "messages": [{"role": "user", "content": "x"}], **body}
    for stream in (False, True):
        with server.client() as http:
            response = http.post("/v1/chat/completions", json={**request, "stream": stream})
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error"
        assert error["param"] == param and error["message"]


def test_bad_token_is_openai_401(server: EmberServer) -> None:
    bad = openai.OpenAI(api_key="nope", base_url=f"{server.url}/v1", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        bad.embeddings.create(model=NAME, input="x")
    assert isinstance(caught.value.body, dict) and caught.value.body["code"] == "invalid_api_key"


def test_failure_mid_stream_is_reported_in_the_stream(server: EmberServer) -> None:
    request = {
        "model": NAME,
        "messages": [{"role": "user", "content": "a b c"}],
        "stream": True,
        "fail_at": 1,
    }
    with server.client() as http, http.stream("POST", "/v1/chat/completions", json=request) as r:
        lines = [line for line in r.iter_lines() if line]
    assert "engine crashed mid-stream" in lines[-2] and '"error"' in lines[-2]
    assert lines[-1] == "data: [DONE]"  # as vLLM's server ends a failed stream


def test_client_gone_cancels_generation(server: EmberServer) -> None:
    """A client that hangs up mid-stream frees the replica: the prediction is canceled."""
    words = " ".join(f"w{i}" for i in range(40))
    request = {
        "model": NAME,
        "messages": [{"role": "user", "content": words}],
        "stream": True,
        "delay": 0.2,
    }
    with server.client() as http:
        with http.stream("POST", "/v1/chat/completions", json=request) as response:
            next(response.iter_lines())
        deadline = time.monotonic() + 10
        while True:
            page = http.get("/v1/predictions").json()["results"]
            mine = [p for p in page if p["input"].get("messages", [{}])[0].get("content") == words]
            if mine and mine[0]["status"] == "canceled":
                break
            assert time.monotonic() < deadline, mine
            time.sleep(0.1)


def test_metrics_and_ledger_see_openai_requests(server: EmberServer, client: openai.OpenAI) -> None:
    client.chat.completions.create(
        model=NAME, messages=[{"role": "user", "content": "count these four"}], stream=True
    ).close()
    stream = client.chat.completions.create(
        model=NAME, messages=[{"role": "user", "content": "one more time"}], stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream) == "one more time"
    with server.client() as http:
        text = http.get("/metrics").text
        assert 'ember_time_to_first_token_seconds_count{deployment="ember/echo"}' in text
        assert 'ember_inter_token_latency_seconds_count{deployment="ember/echo"}' in text
        generated = _sample(text, 'ember_generation_tokens_total{deployment="ember/echo"}')
        assert generated >= 3
        costs = http.get("/v1/costs", params={"by": "deployment"}).json()
    row = next(r for r in costs["rows"] if r["key"] == "ember/echo")
    assert row["output_tokens"] >= 3


def _sample(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in /metrics")


def test_replicate_api_still_serves_the_same_deployment(server: EmberServer) -> None:
    with server.client() as http:
        response = http.post(
            "/v1/deployments/ember/echo/predictions",
            json={"input": {"text": "via replicate"}},
            headers={"Prefer": "wait"},
        )
    assert response.status_code == 201, response.text
    assert "".join(response.json()["output"]) == "via replicate "


def _floats(encoded: str) -> list[float]:
    raw = base64.b64decode(encoded)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


def test_raw_base64_embedding(server: EmberServer) -> None:
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        body = http.post(
            "/v1/embeddings", json={"model": NAME, "input": "abc", "encoding_format": "base64"}
        ).json()
    assert _floats(body["data"][0]["embedding"]) == [3.0, 1.0, 1.0]


def test_stream_options_need_stream(server: EmberServer) -> None:
    request = {
        "model": NAME,
        "messages": [{"role": "user", "content": "x"}],
        "stream_options": {"include_usage": True},
    }
    with server.client() as http:
        response = http.post("/v1/chat/completions", json=request)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "stream_options"


def test_history_keeps_a_summary_not_the_vectors(server: EmberServer) -> None:
    with server.client() as http:
        answer = http.post("/v1/embeddings", json={"model": NAME, "input": ["a", "bb", "ccc"]})
        assert len(answer.json()["data"]) == 3
        deadline = time.monotonic() + 10
        while True:  # the history is written a moment after the answer
            page = http.get("/v1/predictions").json()["results"]
            mine = [p for p in page if p["input"].get("input") == ["a", "bb", "ccc"]]
            if mine or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    assert mine[0]["output"]["data"] == "3 embeddings"
    mine = mine[0]
    assert mine["output"]["usage"]["prompt_tokens"] == 3


def test_second_deployment_names(server: EmberServer, client: openai.OpenAI) -> None:
    """A deployment named unlike its model is retrievable by its own name; a bare name or
    alias two deployments share belongs to neither (ask by owner/name)."""
    version = server.deploy(MODELS / "ember" / "openai-echo", "ember", "echo")["id"]
    with server.client() as http:
        response = http.post(
            "/v1/deployments",
            json={"name": "chatbot", "model": NAME, "version": version, "hardware": "cpu"},
        )
        assert response.status_code == 201, response.text
    try:
        assert client.models.retrieve("ember/chatbot").id == "ember/chatbot"
        ids = {model.id for model in client.models.list()}
        assert {"ember/echo", "ember/chatbot", "echo", "chatbot"} <= ids
        assert "echo-chat" not in ids  # both deployments run the package with that alias
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(
                model="echo-chat", messages=[{"role": "user", "content": "x"}]
            )
    finally:
        with server.client() as http:
            assert http.delete("/v1/deployments/ember/chatbot").status_code == 204


def test_a_tenant_cannot_take_the_admins_bare_name(server: EmberServer) -> None:
    """Issue 18: Bob deploying `bob/echo` (the same package, so also the alias `echo-chat`)
    used to make the admin's `model: "echo"` answer 404: a bare name two deployments claim
    belonged to neither. Bare names resolve within the caller's own account first."""
    with server.client() as admin:
        made = admin.post("/v1/tokens", json={"name": "bob", "owner": "bob", "scope": "deploy"})
        assert made.status_code == 201, made.text
    bob_token = made.json()["token"]
    version = server.deploy(MODELS / "ember" / "openai-echo", "bob", "echo")
    with server.client(bob_token) as bob:
        response = bob.post(
            "/v1/deployments",
            json={"name": "echo", "model": "bob/echo", "version": version["id"]},
        )
        assert response.status_code == 201, response.text
    try:
        for token, owner in ((TOKEN, "ember"), (bob_token, "bob")):
            client = openai.OpenAI(api_key=token, base_url=f"{server.url}/v1", max_retries=0)
            for name in ("echo", "echo-chat"):
                answer = client.chat.completions.create(
                    model=name, messages=[{"role": "user", "content": "x"}]
                )
                assert answer.choices[0].message.content == "x"
                assert client.models.retrieve(name).owned_by == owner, (owner, name)
    finally:
        with server.client() as http:
            assert http.delete("/v1/deployments/bob/echo").status_code == 204


def test_truss_model_with_openai_hook(server: EmberServer, client: openai.OpenAI) -> None:
    """An unchanged Truss model that defines `chat_completions(model_input, request)`."""
    version = server.deploy(MODELS / "truss" / "openai-chat", "ember", "truss-chat")["id"]
    with server.client() as http:
        response = http.post(
            "/v1/deployments",
            json={"name": "truss-chat", "model": "ember/truss-chat", "version": version},
        )
        assert response.status_code == 201, response.text
    answer = client.chat.completions.create(
        model="ember/truss-chat", messages=[{"role": "user", "content": "shout"}]
    )
    assert answer.choices[0].message.content == "SHOUT"
    with pytest.raises(openai.BadRequestError) as caught:  # it has no completions hook
        client.completions.create(model="ember/truss-chat", prompt="x")
    assert "chat.completions" in str(caught.value)


def test_ember_chat_command(server: EmberServer) -> None:
    """`ember chat` streams the answer to stdout and its figures to stderr; without -m it
    reads one message per line from stdin and keeps the conversation."""
    one = server.cli("chat", NAME, "-m", "hello from the cli", "--max-tokens", "32")
    assert one.returncode == 0, one.stderr
    assert one.stdout.strip() == "hello from the cli"
    assert "first token" in one.stderr
    env = {**os.environ, "EMBER_URL": server.url, "EMBER_TOKEN": TOKEN}
    talk = subprocess.run(
        [sys.executable, "-m", "ember", "chat", "echo-chat", "--max-tokens", "32"],
        input="first line\nsecond line\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert talk.returncode == 0, talk.stderr
    assert talk.stdout.split("\n")[:2] == ["first line", "second line"]
    missing = server.cli("chat", "ember/nope", "-m", "x")
    assert missing.returncode != 0 and "does not exist" in missing.stderr
