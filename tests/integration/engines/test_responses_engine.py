"""OpenAI's Responses API and tool calls on a real model: SmolLM2-135M on llama.cpp (the
shipped examples/chat) deployed to a real `ember serve`, driven by the official `openai`
Python client (and the JavaScript one) with only the base URL changed: plain and streamed
responses, usage, stored responses and another account's 404, previous_response_id, a 400
that names the field, and tool-call round trips through both chat completions and
Responses. The gateway's translation alone, without a model:
tests/integration/api/test_responses_api.py."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.support.api import serving
from tests.support.paths import EXAMPLES, ROOT
from tests.support.server import TOKEN, EmberServer

CHAT = "ember/smollm2"
GREEDY: dict[str, Any] = {"temperature": 0, "extra_body": {"seed": 1}}
ORDER = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
]
WEATHER = {
    "name": "get_weather",
    "description": "The current weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
QUESTION = "What is the weather in Paris?"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmberServer]:
    with serving("sqlite", tmp_path_factory.mktemp("responses-engine")) as server:
        version = server.deploy(EXAMPLES / "chat", "ember", "smollm2")["id"]
        with server.client() as http:
            made = http.post(
                "/v1/deployments",
                json={"name": "smollm2", "model": CHAT, "version": version, "hardware": "cpu"},
            )
            assert made.status_code == 201, made.text
        yield server


@pytest.fixture(scope="module")
def client(server: EmberServer) -> openai.OpenAI:
    return openai.OpenAI(api_key=TOKEN, base_url=f"{server.url}/v1", max_retries=0, timeout=120)


def test_response_answers_with_usage_the_ledger_agrees_with(
    client: openai.OpenAI, api: httpx.Client
) -> None:
    response = client.responses.create(
        model=CHAT, input="Name three colours.", max_output_tokens=24, **GREEDY
    )
    assert response.status in ("completed", "incomplete")
    assert response.output_text.strip()
    usage = response.usage
    assert usage is not None and usage.input_tokens > 5 and 0 < usage.output_tokens <= 24
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    prediction = api.get(f"/v1/predictions/{response.id.removeprefix('resp_')}").json()
    assert prediction["metrics"]["output_token_count"] == usage.output_tokens


def test_max_output_tokens_leaves_it_incomplete(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model=CHAT, input="Tell me a long story.", max_output_tokens=4, **GREEDY
    )
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.usage is not None and response.usage.output_tokens == 4
    assert response.output[0].status == "incomplete"


def test_stream_events_in_order_add_up_to_the_plain_answer(client: openai.OpenAI) -> None:
    asked: dict[str, Any] = {"model": CHAT, "input": "Name three colours.", **GREEDY}
    plain = client.responses.create(max_output_tokens=20, **asked)
    events = list(client.responses.create(max_output_tokens=20, stream=True, **asked))
    kinds = [e.type for e in events]
    deltas = kinds.count("response.output_text.delta")
    assert deltas > 3
    expected = ORDER[:4] + ["response.output_text.delta"] * deltas + ORDER[5:]
    assert kinds == [*expected, f"response.{plain.status}"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == plain.output_text == events[-1].response.output_text
    assert events[-1].response.usage is not None
    assert events[-1].response.usage.output_tokens == plain.usage.output_tokens  # type: ignore[union-attr]


def test_stream_helper_and_instructions(client: openai.OpenAI) -> None:
    with client.responses.stream(
        model=CHAT,
        instructions="Answer in one word.",
        input=[{"role": "user", "content": [{"type": "input_text", "text": "Sky colour?"}]}],
        max_output_tokens=32,
        temperature=0,
        # The SDK's helper has a final response only when it completes (as with OpenAI's):
        # the engine's own `stop` (passed through) ends it before max_output_tokens.
        extra_body={"seed": 1, "stop": ["\n", "."]},
    ) as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert text and text == final.output_text
    assert final.instructions == "Answer in one word."


def test_stored_response_other_account_and_delete(
    client: openai.OpenAI, server: EmberServer, api: httpx.Client
) -> None:
    response = client.responses.create(model=CHAT, input="Hi!", max_output_tokens=8)
    assert client.responses.retrieve(response.id).output_text == response.output_text
    made = api.post("/v1/tokens", json={"name": "b", "owner": "bob", "scope": "predict"})
    bob = openai.OpenAI(api_key=made.json()["token"], base_url=f"{server.url}/v1", max_retries=0)
    with pytest.raises(openai.NotFoundError):
        bob.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError):
        bob.responses.delete(response.id)
    client.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)


def test_previous_response_id_carries_the_conversation(client: openai.OpenAI) -> None:
    first = client.responses.create(model=CHAT, input="My name is Ada.", max_output_tokens=12)
    second = client.responses.create(
        model=CHAT,
        input="What is my name?",
        previous_response_id=first.id,
        max_output_tokens=12,
    )
    assert first.usage is not None and second.usage is not None
    # The second prompt holds the first turn (its question and answer) and the new question.
    assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens


def test_input_beyond_the_context_is_400_naming_input(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=CHAT, input="word " * 5000, max_output_tokens=4)
    body = caught.value.body
    assert isinstance(body, dict) and body["param"] == "input"
    assert "maximum context length is 2048 tokens" in body["message"]


# -- tools ---------------------------------------------------------------------------------


def test_chat_tool_call_round_trip(client: openai.OpenAI) -> None:
    """tools → tool_calls → a tool message with the result → an answer."""
    tools: Any = [{"type": "function", "function": WEATHER}]
    messages: list[Any] = [{"role": "user", "content": QUESTION}]
    asked: dict[str, Any] = {"model": CHAT, "tools": tools, "max_tokens": 60, **GREEDY}
    first = client.chat.completions.create(
        messages=messages, tool_choice="required", parallel_tool_calls=False, **asked
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
    [call] = choice.message.tool_calls
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments)["city"]  # type: ignore[union-attr]
    messages += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "18 degrees and sunny"},
    ]
    answer = client.chat.completions.create(messages=messages, tool_choice="none", **asked)
    assert answer.choices[0].message.content and not answer.choices[0].message.tool_calls
    # The same call, streamed: one whole tool call delta, then its finish reason.
    chunks = list(
        client.chat.completions.create(
            messages=messages[:1],
            tool_choice="required",
            parallel_tool_calls=False,
            stream=True,
            **asked,
        )
    )
    streamed = [d for c in chunks for d in c.choices[0].delta.tool_calls or []]
    assert [d.function.name for d in streamed] == ["get_weather"]  # type: ignore[union-attr]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_tools_a_model_cannot_call_are_a_400_saying_why(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=CHAT,
            messages=[{"role": "user", "content": QUESTION}],
            tools=[{"type": "function", "function": WEATHER}],
            logprobs=True,
        )
    assert "logprobs are not supported together with tools" in str(caught.value)


def test_responses_function_call_round_trip(client: openai.OpenAI) -> None:
    tools: Any = [{"type": "function", **WEATHER}]
    first = client.responses.create(
        model=CHAT,
        input=QUESTION,
        tools=tools,
        tool_choice="required",
        parallel_tool_calls=False,
        max_output_tokens=60,
        **GREEDY,
    )
    [call] = first.output
    assert call.type == "function_call" and call.name == "get_weather"
    assert call.id.startswith("fc_") and call.call_id.startswith("call_")  # type: ignore[union-attr]
    assert json.loads(call.arguments)["city"]
    answer = client.responses.create(
        model=CHAT,
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "18 C"}],
        tools=tools,
        tool_choice="none",
        max_output_tokens=40,
        **GREEDY,
    )
    assert answer.output[0].type == "message" and answer.output_text
    # Streamed, the call is its own output item with its arguments' events.
    events = list(
        client.responses.create(
            model=CHAT,
            input=QUESTION,
            tools=tools,
            tool_choice="required",
            parallel_tool_calls=False,
            max_output_tokens=60,
            stream=True,
            **GREEDY,
        )
    )
    assert [e.type for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    done = events[-1].response.output[0]
    assert done.type == "function_call" and json.loads(done.arguments)["city"]


def test_javascript_client_responses(server: EmberServer) -> None:
    """The official JavaScript `openai` client's responses.create, plain and streamed."""
    js = ROOT / "tests" / "js"
    if not (js / "node_modules" / "openai").is_dir():
        pytest.fail("the JavaScript clients are not installed: run bash scripts/test.sh")
    script = """
import OpenAI from "openai";
const client = new OpenAI({apiKey: process.env.EMBER_TOKEN, baseURL: process.env.BASE});
const asked = {model: "ember/smollm2", input: "Name a colour.", max_output_tokens: 8,
               temperature: 0, seed: 1};
const plain = await client.responses.create(asked);
const types = [];
let text = "";
for await (const event of await client.responses.create({...asked, stream: true})) {
  types.push(event.type);
  if (event.type === "response.output_text.delta") text += event.delta;
}
console.log(JSON.stringify({plain: plain.output_text, usage: plain.usage, types, text}));
"""
    result = subprocess.run(
        ["node", "--input-type=module", "-e", script],
        cwd=js,
        env={**os.environ, "EMBER_TOKEN": TOKEN, "BASE": f"{server.url}/v1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)
    assert got["plain"] and got["usage"]["output_tokens"] > 0
    assert got["types"][:4] == ORDER[:4] and got["types"][-1].startswith("response.")
    assert got["text"] == got["plain"]
