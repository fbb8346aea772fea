"""Tool calling on the llama.cpp engine: OpenAI's `tools`, `tool_choice` and `tool_calls`,
for any model whose chat template can show the model a tool's result.

How. Small GGUF models rarely have a tool-call format of their own, and those that do each
have a different one, so the engine uses one format for every model, the way llama.cpp's own
server does for templates without native tool support (its "generic" format): the tools are
described in the system message, the model answers in JSON, either
``{"tool_calls": [{"name": ..., "arguments": {...}}]}`` or ``{"response": "..."}``, and a
grammar built from the tools' JSON schemas constrains the sampling, so the answer always
parses and every call names a real tool with arguments that fit its schema. Earlier turns are
shown in the same JSON (an assistant's tool calls, its replies). Tool results are messages of
role ``tool`` when the template was written for tools, else the user's ("Result of
get_weather: ..."): a model that never saw a ``tool`` role (SmolLM2) reads them better so,
and every template can show them. `tool_choice` picks the grammar: `auto` either form,
`required` or a named function a call (to that function), `none` a reply;
`parallel_tool_calls: false` allows one call.

Why not llama-cpp-python's ``chatml-function-calling`` handler: it generates by itself
(``create_completion``), outside this engine's token loop (seeds, the lock, token counts for
the ledger, stop strings, streaming as generated), and its template drops ``tool`` messages,
so a tool's result never reaches the model and no round trip can work.

Where it cannot work, the request is refused with a 400 that says why: a template that
rejects or drops a tool conversation (checked once, when the model loads), no chat template,
tools other than functions, `logprobs` (they would be the JSON's tokens) or a
`response_format` (it needs the grammar) together with tools.

Streaming: a reply streams as it is generated (the JSON string is decoded as it grows); tool
calls are sent whole, each once the answer is complete.

How well a model chooses between calling and replying, and what it replies, is its own: the
grammar makes SmolLM2-135M's calls well-formed, with fitting arguments, but its choice under
`auto` and its use of a tool's result are a 135M model's (often poor); larger models do
better with the same format.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from llama_cpp.llama_grammar import LlamaGrammar

from ember.engines.base import RequestError

PROBE = "ember-tool-result-probe"
TOOL_TEMPLATE = re.compile(r"""["']tool["']|tool_call""")  # a template written for tools
NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
OPENING = re.compile(r'\s*\{\s*"(response|tool_calls)"\s*:\s*')
ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
ANY_OBJECT = {"type": "object"}
SEPARATOR = re.compile(r"[\s,]*")


@dataclass(frozen=True)
class Support:
    """What the model's chat template can show of a tool conversation: tool results as
    messages of role ``tool`` (a template written for tools), or as user messages (any
    other template: a model that never saw a ``tool`` role reads them better as the
    user's), or nothing (`unsupported` says why)."""

    tool_role: bool = False
    unsupported: str | None = None


def template_support(formatter: Callable[..., Any] | None) -> Support:
    """How (and whether) this model's chat template can hold a tool conversation, found by
    formatting one once, when the model loads."""
    if formatter is None:
        return Support(
            unsupported="the model has no chat template (set engine_options.chat_format)"
        )
    knows_tools = bool(TOOL_TEMPLATE.search(getattr(formatter, "template", "") or ""))
    reasons = []
    for tool_role in (True, False) if knows_tools else (False,):
        result = {"role": "tool" if tool_role else "user", "content": PROBE}
        probe = [
            {"role": "system", "content": "s"},
            {"role": "user", "content": "u"},
            {"role": "assistant", "content": '{"tool_calls": []}'},
            result,
        ]
        try:
            prompt = formatter(messages=probe).prompt
        except Exception as exc:  # the template's raise_exception: roles must alternate, ...
            reasons.append(f"the model's chat template rejects a tool conversation ({exc})")
            continue
        if PROBE in prompt:
            return Support(tool_role=tool_role)
        reasons.append("the model's chat template drops a tool's result")
    return Support(unsupported=reasons[-1])


@dataclass
class ToolCalling:
    """One request's tools: the messages as the model sees them, the grammar of its answer,
    and how to read the answer back."""

    messages: list[dict[str, Any]]
    grammar: LlamaGrammar

    def answer(self, text: str, finish: str) -> tuple[str | None, list[dict[str, Any]], str]:
        """The generated JSON as OpenAI's message: (content, tool_calls, finish_reason)."""
        reply = ToolStream()
        reply.feed(text)
        content, calls = reply.result()
        if calls:  # cut short by the token limit, the calls before the cut are still given
            return None, calls, "length" if finish == "length" else "tool_calls"
        return content, [], finish


def plan(
    request: dict[str, Any], messages: list[dict[str, Any]], support: Support
) -> ToolCalling | None:
    """How to call the request's tools, or None for a plain chat (no tools, none called
    before). Raises RequestError (a 400) for what cannot be honoured, saying why."""
    tools = request.get("tools") or []
    choice = request.get("tool_choice")
    history = any(m.get("tool_calls") or m["role"] == "tool" for m in messages)
    if not tools and not history:
        if choice not in (None, "none", "auto"):
            raise RequestError("tool_choice needs tools", param="tool_choice")
        return None
    if support.unsupported is not None:
        raise RequestError(f"tools: {support.unsupported}; this model cannot call tools", "tools")
    if request.get("logprobs"):
        raise RequestError("logprobs are not supported together with tools", "logprobs")
    if (request.get("response_format") or {}).get("type", "text") != "text":
        raise RequestError(
            "response_format is not supported together with tools", "response_format"
        )
    functions = [_function(i, tool) for i, tool in enumerate(tools)]
    names = [f["name"] for f in functions]
    if choice is None:
        choice = "auto" if functions else "none"
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        if choice.get("type") != "function" or name not in names:
            raise RequestError(
                f"tool_choice: no function named {name!r} in tools", param="tool_choice"
            )
        functions = [f for f in functions if f["name"] == name]
        choice = "required"
    if choice not in ("none", "auto", "required"):
        raise RequestError(
            "tool_choice must be none, auto, required or {type: function, function: {name}}",
            param="tool_choice",
        )
    if choice == "required" and not functions:
        raise RequestError("tool_choice: required needs tools", param="tool_choice")
    calls = [] if choice == "none" else functions
    one = request.get("parallel_tool_calls") is False or isinstance(
        request.get("tool_choice"), dict
    )
    schema = _schema(calls, reply=choice != "required", one=one)
    try:
        grammar = LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
    except Exception as exc:
        raise RequestError(f"tools: a parameters schema is not usable: {exc}", "tools") from exc
    shown = _shown(messages, calls, choice, support.tool_role)
    return ToolCalling(shown, grammar)


def _function(i: int, tool: Any) -> dict[str, Any]:
    function = tool.get("function") if isinstance(tool, dict) else None
    if not isinstance(tool, dict) or tool.get("type") != "function" or not function:
        raise RequestError(f"tools[{i}]: only function tools are supported", param="tools")
    name = function.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise RequestError(
            f"tools[{i}].function.name must be 1-64 letters, digits, _ or -", param="tools"
        )
    parameters = function.get("parameters") or ANY_OBJECT
    if not isinstance(parameters, dict):
        raise RequestError(f"tools[{i}].function.parameters must be an object", "tools")
    described = {"name": name, "parameters": parameters}
    if function.get("description"):
        described["description"] = function["description"]
    return described


def _schema(functions: list[dict[str, Any]], reply: bool, one: bool) -> dict[str, Any]:
    """The JSON schema the answer must fit: a list of calls, a reply, or either."""
    forms: list[dict[str, Any]] = []
    if functions:
        calls: dict[str, Any] = {
            "type": "array",
            "minItems": 1,
            "items": {
                "anyOf": [
                    {
                        "type": "object",
                        "properties": {"name": {"const": f["name"]}, "arguments": f["parameters"]},
                        "required": ["name", "arguments"],
                    }
                    for f in functions
                ]
            },
        }
        if one:
            calls["maxItems"] = 1
        forms.append(_object("tool_calls", calls))
    if reply:
        forms.append(_object("response", {"type": "string"}))
    return forms[0] if len(forms) == 1 else {"anyOf": forms}


def _object(key: str, value: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": {key: value}, "required": [key]}


def _instructions(functions: list[dict[str, Any]], choice: str) -> str:
    reply = 'reply to the user as {"response": "<your reply>"}'
    call = 'call tools as {"tool_calls": [{"name": "<tool name>", "arguments": {<arguments>}}]}'
    if choice == "none" or not functions:
        return f"Answer in JSON only: {reply}."
    listed = "\n".join(json.dumps(f, ensure_ascii=False) for f in functions)
    how = f"{call}." if choice == "required" else f"either {call}, or {reply}."
    return (
        "You can call these tools (each with a JSON schema of its arguments):\n"
        f"{listed}\n\nAnswer in JSON only: {how} Use a tool's result, given in a tool "
        "message, to answer the user."
    )


def _shown(
    messages: list[dict[str, Any]], functions: list[dict[str, Any]], choice: str, tool_role: bool
) -> list[dict[str, Any]]:
    """The conversation as the model sees it: the instructions in the system message, the
    assistant's earlier answers in the JSON it is asked to write, and tool results as
    `tool` messages or, for a template not written for tools, as the user's (several in a
    row as one message, so user and assistant still alternate)."""
    shown: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # call id → the function it called
    for message in messages:
        role, content = message["role"], message.get("content") or ""
        for call in message.get("tool_calls") or []:
            names[call["id"]] = call["function"]["name"]
        if role == "tool" and not tool_role:
            name = names.get(message.get("tool_call_id") or "", "the tool")
            said = f"Result of {name}: {content}"
            if shown and shown[-1].get("from_tools"):
                shown[-1]["content"] += "\n" + said
            else:
                shown.append({"role": "user", "content": said, "from_tools": True})
            continue
        if role == "assistant":
            if message.get("tool_calls"):
                calls = [_earlier_call(c) for c in message["tool_calls"]]
                content = json.dumps({"tool_calls": calls}, ensure_ascii=False)
            else:
                content = json.dumps({"response": content}, ensure_ascii=False)
        entry = {"role": role, "content": content}
        if message.get("name"):
            entry["name"] = message["name"]
        shown.append(entry)
    for entry in shown:
        entry.pop("from_tools", None)
    instructions = _instructions(functions, choice)
    if shown and shown[0]["role"] == "system":
        shown[0]["content"] = f"{shown[0]['content']}\n\n{instructions}"
    else:
        shown.insert(0, {"role": "system", "content": instructions})
    return shown


def _earlier_call(call: dict[str, Any]) -> dict[str, Any]:
    function = call["function"]
    try:
        arguments: Any = json.loads(function["arguments"])
    except ValueError:
        arguments = function["arguments"]
    return {"name": function["name"], "arguments": arguments}


def _call_id() -> str:
    return "call_" + secrets.token_hex(12)


@dataclass
class ToolStream:
    """Reads the model's JSON answer as it grows: a reply's text as soon as it is decoded,
    tool calls once the answer is complete."""

    raw: str = ""
    form: str | None = None  # "response" or "tool_calls", once the answer says
    start: int = 0  # where the value of its one key begins in `raw`
    sent: int = 0  # characters of the reply handed out
    calls: list[dict[str, Any]] = field(default_factory=list)

    def feed(self, text: str) -> str:
        """Take more of the answer; return the reply's text that is new (may be empty)."""
        self.raw += text
        if self.form is None:
            opening = OPENING.match(self.raw)
            if opening is None:
                return ""
            self.form, self.start = opening.group(1), opening.end()
        if self.form != "response":
            return ""
        decoded = partial_string(self.raw[self.start :].lstrip())
        new, self.sent = decoded[self.sent :], max(self.sent, len(decoded))
        return new

    def result(self) -> tuple[str, list[dict[str, Any]]]:
        """The whole reply's text and the tool calls (with new ids), once generation ended.
        When the token limit cut the list of calls, the calls before the cut are kept and
        the one it cut is dropped: its arguments are not whole."""
        if self.form == "response":
            return partial_string(self.raw[self.start :].lstrip()), []
        if self.form is None:
            return "", []
        calls = []
        for call in whole_items(self.raw[self.start :]):
            if not isinstance(call, dict) or not {"name", "arguments"} <= set(call):
                continue
            arguments = json.dumps(call["arguments"], ensure_ascii=False)
            function = {"name": call["name"], "arguments": arguments}
            calls.append({"id": _call_id(), "type": "function", "function": function})
        return "", calls

    def deltas(self, finish: str) -> tuple[list[dict[str, Any]], str]:
        """The stream's last deltas (what is left of the reply, or the calls, each whole)
        and its finish reason."""
        content, calls = self.result()
        if calls:
            deltas = [{"tool_calls": [{"index": i, **call}]} for i, call in enumerate(calls)]
            return deltas, "length" if finish == "length" else "tool_calls"
        rest = content[self.sent :]
        self.sent = len(content)
        return ([{"content": rest}] if rest else []), finish


def whole_items(text: str) -> list[Any]:
    """The items of a JSON array that may be cut short (`text` starts at its `[`): every
    item before the cut."""
    decoder = json.JSONDecoder(strict=False)
    items: list[Any] = []
    text = text.lstrip()
    if not text.startswith("["):
        return items
    at = 1
    while True:
        at = SEPARATOR.match(text, at).end()  # type: ignore[union-attr]
        try:
            item, at = decoder.raw_decode(text, at)
        except ValueError:
            return items
        items.append(item)


def partial_string(text: str) -> str:
    """The decoded part of a JSON string literal that may not be complete yet (`text`
    starts at its opening quote): up to its closing quote, or up to an escape still cut."""
    if not text.startswith('"'):
        return ""
    out: list[str] = []
    i = 1
    while i < len(text):
        c = text[i]
        if c == '"':
            break
        if c != "\\":
            out.append(c)
            i += 1
            continue
        if i + 1 >= len(text):
            break
        kind = text[i + 1]
        if kind != "u":
            out.append(ESCAPES.get(kind, kind))
            i += 2
            continue
        if i + 6 > len(text):
            break
        digits = text[i + 2 : i + 6]
        if not all(d in "0123456789abcdefABCDEF" for d in digits):
            out.append("\ufffd")
            i += 2
            continue
        code = int(digits, 16)
        if 0xD800 <= code < 0xDC00:  # a UTF-16 pair: wait for its second half
            if i + 12 > len(text):
                break
            second = text[i + 8 : i + 12]
            if text[i + 6 : i + 8] == "\\u" and all(d in "0123456789abcdefABCDEF" for d in second):
                low = int(second, 16)
                if 0xDC00 <= low < 0xE000:
                    out.append(chr(0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)))
                    i += 12
                    continue
        out.append("\ufffd" if 0xD800 <= code < 0xE000 else chr(code))
        i += 6
    return "".join(out)
