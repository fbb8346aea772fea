"""OpenAI's Responses API through the official `openai` client, base URL changed only, on a
real `ember serve` and a real replica of a predictor with OpenAI's chat hook
(tests/models/ember/openai-echo: the answer echoes the last user message word by word), so
the gateway's translation is tested in seconds, without a model: shapes, the stream's events
in OpenAI's order, stored responses per account, previous_response_id, and refusals. The
same API on a real model (SmolLM2 on llama.cpp), tools included, is in
tests/integration/engines/test_responses_engine.py."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.support.api import serving
from tests.support.paths import MODELS
from tests.support.server import TOKEN, EmberServer

NAME = "ember/echo"
ORDER = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmberServer]:
    with serving("sqlite", tmp_path_factory.mktemp("responses")) as server:
        version = server.deploy(MODELS / "ember" / "openai-echo", "ember", "echo")["id"]
        with server.client() as http:
            response = http.post(
                "/v1/deployments",
                json={"name": "echo", "model": NAME, "version": version, "hardware": "cpu"},
            )
            assert response.status_code == 201, response.text
        yield server


@pytest.fixture(scope="module")
def client(server: EmberServer) -> openai.OpenAI:
    return openai.OpenAI(api_key=TOKEN, base_url=f"{server.url}/v1", max_retries=0)


@pytest.fixture(scope="module")
def other(server: EmberServer, api: httpx.Client) -> openai.OpenAI:
    """A client of another account, with its own token."""
    made = api.post("/v1/tokens", json={"name": "other", "owner": "other", "scope": "predict"})
    assert made.status_code == 201, made.text
    return openai.OpenAI(api_key=made.json()["token"], base_url=f"{server.url}/v1", max_retries=0)


def test_text_input_answers_a_response(client: openai.OpenAI) -> None:
    response = client.responses.create(model=NAME, input="hello there world")
    assert response.object == "response"
    assert response.id.startswith("resp_")
    assert response.status == "completed"
    assert response.model == NAME
    assert response.output_text == "hello there world"
    [message] = response.output
    assert message.type == "message" and message.role == "assistant"
    assert message.status == "completed" and message.id.startswith("msg_")
    assert message.content[0].type == "output_text" and message.content[0].annotations == []
    assert response.usage is not None
    assert response.usage.output_tokens == 3
    assert response.usage.total_tokens == response.usage.input_tokens + 3


def words_seen(api: httpx.Client, response_id: str) -> int:
    """The words of every message the echo was sent (it records them as input tokens), from
    the prediction the response was: its id is the response's after `resp_`."""
    prediction = api.get(f"/v1/predictions/{response_id.removeprefix('resp_')}")
    assert prediction.status_code == 200, prediction.text
    return prediction.json()["metrics"]["input_token_count"]


def test_message_items_and_instructions_become_chat_messages(
    client: openai.OpenAI, api: httpx.Client
) -> None:
    response = client.responses.create(
        model=NAME,
        instructions="be brief",
        input=[
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "first answer"},
            {
                "type": "message",
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "second "},
                    {"type": "input_text", "text": "question here"},
                ],
            },
        ],
    )
    assert response.output_text == "second question here"
    assert response.instructions == "be brief"
    assert words_seen(api, response.id) == 2 + 2 + 2 + 3  # instructions and three items


def test_stream_sends_openai_events_in_order(client: openai.OpenAI) -> None:
    events = list(client.responses.create(model=NAME, input="one two three", stream=True))
    kinds = [event.type for event in events]
    deltas = kinds.count("response.output_text.delta")
    assert deltas == 3
    assert kinds == ORDER[:4] + ["response.output_text.delta"] * 3 + ORDER[5:]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "one two three"
    done = events[-1].response
    assert done.status == "completed" and done.output_text == "one two three"
    assert events[0].response.status == "in_progress" and events[0].response.output == []
    item_ids = {e.item_id for e in events if hasattr(e, "item_id")}
    assert item_ids == {done.output[0].id}


def test_stream_helper_accumulates_the_final_response(client: openai.OpenAI) -> None:
    """`client.responses.stream` checks the events' order and identities as it goes."""
    with client.responses.stream(model=NAME, input="alpha beta") as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert text == "alpha beta" == final.output_text


def test_stored_responses_get_delete_and_input_items(client: openai.OpenAI) -> None:
    response = client.responses.create(model=NAME, input="keep me")
    again = client.responses.retrieve(response.id)
    assert again.id == response.id and again.output_text == "keep me"
    items = client.responses.input_items.list(response.id)
    assert [item.type for item in items.data] == ["message"]
    assert items.data[0].content[0].text == "keep me"
    client.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.retrieve(response.id)
    assert "not found" in str(caught.value)
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(response.id)
    unstored = client.responses.create(model=NAME, input="forget me", store=False)
    assert unstored.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unstored.id)


def test_streamed_responses_are_stored_too(client: openai.OpenAI) -> None:
    events = list(client.responses.create(model=NAME, input="streamed words", stream=True))
    stored = client.responses.retrieve(events[-1].response.id)
    assert stored.output_text == "streamed words" and stored.status == "completed"


def test_another_account_sees_404(client: openai.OpenAI, other: openai.OpenAI) -> None:
    response = client.responses.create(model=NAME, input="mine alone")
    for call in (
        lambda: other.responses.retrieve(response.id),
        lambda: other.responses.delete(response.id),
        lambda: other.responses.input_items.list(response.id),
        lambda: other.responses.create(
            model="anything", input="x", previous_response_id=response.id
        ),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    assert client.responses.retrieve(response.id).output_text == "mine alone"


def test_previous_response_id_continues_the_conversation(
    client: openai.OpenAI, api: httpx.Client
) -> None:
    first = client.responses.create(model=NAME, input="one two")
    second = client.responses.create(
        model=NAME, input="three four five", previous_response_id=first.id
    )
    assert second.previous_response_id == first.id
    assert second.output_text == "three four five"
    # The first turn's question and answer came too.
    assert words_seen(api, second.id) == 2 + 2 + 3


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"input": [{"type": "web_search_call"}]}, "input"),
        ({"input": [{"role": "robot", "content": "x"}]}, "input"),
        ({"input": "x", "tools": [{"type": "web_search"}]}, "tools"),
        ({"input": "x", "background": True}, "background"),
        ({"input": "x", "truncation": "auto"}, "truncation"),
        ({"input": "x", "max_output_tokens": 0}, "max_output_tokens"),
        ({"input": "x", "messages": []}, "messages"),
        ({"input": 5}, "input"),
        ({}, "input"),
    ],
)
def test_bad_input_is_400_naming_the_field(
    client: openai.OpenAI, fields: dict[str, object], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=NAME, extra_body=fields)
    body = caught.value.body
    assert isinstance(body, dict) and body["param"] == param, body
    assert body["message"] and body["type"] == "invalid_request_error"


def test_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="nobody/nothing", input="x")


def test_handler_refusal_keeps_its_400(client: openai.OpenAI) -> None:
    """The echo refuses max_tokens over its context: the refusal comes back as a 400 with
    its message, streamed or not."""
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as caught:
            client.responses.create(  # type: ignore[call-overload]
                model=NAME, input="x", max_output_tokens=500, stream=stream
            )
        assert "max_tokens must be at most 64" in str(caught.value)


def test_mid_stream_failure_ends_with_response_failed(client: openai.OpenAI) -> None:
    events = list(
        client.responses.create(model=NAME, input="a b c d", stream=True, extra_body={"fail_at": 2})
    )
    assert events[-1].type == "response.failed"
    assert events[-1].response.status == "failed"
    assert events[-1].response.error is not None
    assert "crashed mid-stream" in events[-1].response.error.message
    kinds = [e.type for e in events]
    assert kinds.index("response.output_item.done") < len(kinds) - 1  # closed first
