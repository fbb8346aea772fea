"""A Responses API request as the chat-completions request the deployment already serves.

OpenAI's Responses API is a newer face of the same generation: `input` (text, or a list of
items: messages, function calls and their outputs) and `instructions` become chat
`messages`; `max_output_tokens`, `text.format`, `tools` and `tool_choice` become their chat
names. Translating at the gateway rather than teaching every engine a second API means every
deployment with a chat handler (the engines, and predictors with Truss's hooks) answers the
Responses API with no change of its own, queued, scaled and metered as any chat request.

What has no chat equivalent is refused with a 400 naming the field, rather than ignored:
built-in tools (web search, file search...), `background`, `conversation`, `prompt`
templates, `truncation: auto`, reasoning effort. Fields that change nothing for a
self-hosted model (`service_tier`, `prompt_cache_key`, `safety_identifier`, `metadata`,
`user`, `max_tool_calls`, which counts built-in tool calls only) are accepted and echoed.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from ember.api.errors import ApiError

# Responses fields read here; any other field of the body passes through to the chat request
# (engines' own sampling fields such as seed or top_k), where the handler refuses what it
# cannot honour, unless it is one the translation itself sets.
RESPONSES_FIELDS = {
    "model",
    "input",
    "instructions",
    "max_output_tokens",
    "temperature",
    "top_p",
    "stream",
    "stream_options",
    "store",
    "previous_response_id",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "text",
    "include",
    "top_logprobs",
    "metadata",
    "user",
    "truncation",
    "reasoning",
    "background",
    "service_tier",
    "prompt_cache_key",
    "prompt_cache_retention",
    "safety_identifier",
    "max_tool_calls",
    "conversation",
    "prompt",
}
CHAT_OWNED = {
    "messages",
    "n",
    "max_tokens",
    "max_completion_tokens",
    "response_format",
    "logprobs",
    "functions",
    "function_call",
    "modalities",
}
LOGPROBS = "message.output_text.logprobs"


@dataclass
class Translated:
    """A Responses request in chat words: the chat body, the request's input as the items
    `GET /v1/responses/{id}/input_items` lists, and its messages (the conversation a later
    `previous_response_id` continues, without `instructions`, which OpenAI does not carry
    over)."""

    chat: dict[str, Any]
    items: list[dict[str, Any]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(16)}"


def bad(message: str, param: str | None) -> ApiError:
    return ApiError(400, message, param=param)


def translate(body: dict[str, Any], history: list[dict[str, Any]]) -> Translated:
    """The chat request for a Responses request (`body`, as validated by the route) that
    follows the conversation `history` (its previous response's messages)."""
    _refuse_unsupported(body)
    items, messages = input_items(body.get("input"))
    if not messages and not history:
        raise bad("input: give a message (text or a list of items)", "input")
    chat_messages = list(history) + messages
    if body.get("instructions"):
        chat_messages.insert(0, {"role": "system", "content": body["instructions"]})
    chat: dict[str, Any] = {"model": body["model"], "messages": chat_messages}
    for name, value in body.items():
        if name not in RESPONSES_FIELDS:
            if name in CHAT_OWNED:
                raise bad(f"{name} is not a parameter of the Responses API", name)
            chat[name] = value
    if body.get("stream"):
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    if body.get("max_output_tokens") is not None:
        chat["max_tokens"] = body["max_output_tokens"]
    for name in ("temperature", "top_p", "user", "parallel_tool_calls"):
        if body.get(name) is not None:
            chat[name] = body[name]
    if body.get("tools"):
        chat["tools"] = [_chat_tool(i, tool) for i, tool in enumerate(body["tools"])]
    if body.get("tool_choice") is not None:
        chat["tool_choice"] = _chat_tool_choice(body["tool_choice"])
    response_format = _response_format((body.get("text") or {}).get("format"))
    if response_format is not None:
        chat["response_format"] = response_format
    if LOGPROBS in (body.get("include") or []):
        chat["logprobs"] = True
        chat["top_logprobs"] = body.get("top_logprobs") or 0
    return Translated(chat, items, messages)


def _refuse_unsupported(body: dict[str, Any]) -> None:
    if body.get("background"):
        raise bad("background: responses run in the foreground on Ember", "background")
    for name in ("conversation", "prompt"):
        if body.get(name) is not None:
            raise bad(f"{name} is not supported: send the input itself", name)
    if body.get("truncation") == "auto":
        raise bad(
            "truncation: only 'disabled' is supported (input longer than the context is a 400)",
            "truncation",
        )
    effort = (body.get("reasoning") or {}).get("effort")
    if effort not in (None, "none"):
        raise bad("reasoning.effort is not supported with this model", "reasoning")
    if body.get("top_logprobs") and LOGPROBS not in (body.get("include") or []):
        raise bad(f"top_logprobs needs include: ['{LOGPROBS}']", "top_logprobs")


# -- input ---------------------------------------------------------------------------------


def input_items(raw: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """`input` as listed items (each with an id) and as chat messages. Consecutive function
    calls become one assistant message with several tool calls, as chat requires."""
    if raw is None:
        return [], []
    if isinstance(raw, str):
        return [_listed_message("user", [{"type": "input_text", "text": raw}])], [
            {"role": "user", "content": raw}
        ]
    items: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    for i, item in enumerate(raw):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise bad(f"{where}: an item must be an object", "input")
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message":
            items.append(_message(where, item, messages))
        elif kind == "function_call":
            items.append(_function_call(where, item, messages))
        elif kind == "function_call_output":
            items.append(_function_output(where, item, messages))
        elif kind == "reasoning":
            continue  # a reasoning model's own notes: nothing for a chat template to show
        else:
            raise bad(
                f"{where}: {kind!r} items are not supported (message, function_call and "
                "function_call_output are)",
                "input",
            )
    return items, messages


def _listed_message(role: str, content: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": new_id("msg"),
        "type": "message",
        "role": role,
        "status": "completed",
        "content": content,
    }


def _message(where: str, item: dict[str, Any], messages: list[dict[str, Any]]) -> dict:
    role = item.get("role")
    if role not in ("user", "assistant", "system", "developer"):
        raise bad(f"{where}.role must be user, assistant, system or developer", "input")
    content = item.get("content")
    text_type = "output_text" if role == "assistant" else "input_text"
    if isinstance(content, str):
        parts = [{"type": text_type, "text": content}]
        chat_content: str | list[dict[str, Any]] = content
    elif isinstance(content, list):
        parts = content
        chat_content = _chat_content(where, content)
    else:
        raise bad(f"{where}.content must be a string or a list of parts", "input")
    messages.append({"role": role, "content": chat_content})
    listed = _listed_message(role, parts)
    if isinstance(item.get("id"), str):
        listed["id"] = item["id"]
    return listed


def _chat_content(where: str, parts: list[Any]) -> str | list[dict[str, Any]]:
    """Message parts as chat content: joined text when all are text (what every chat
    template takes), else chat's parts (an image as `image_url`, for handlers that see)."""
    chat_parts: list[dict[str, Any]] = []
    for j, part in enumerate(parts):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text") and isinstance(part.get("text"), str):
            chat_parts.append({"type": "text", "text": part["text"]})
        elif kind == "refusal" and isinstance(part.get("refusal"), str):
            chat_parts.append({"type": "text", "text": part["refusal"]})
        elif kind == "input_image" and isinstance(part.get("image_url"), str):
            image = {"url": part["image_url"], "detail": part.get("detail") or "auto"}
            chat_parts.append({"type": "image_url", "image_url": image})
        else:
            raise bad(
                f"{where}.content[{j}]: {kind!r} parts are not supported (input_text, "
                "output_text and input_image with an image_url are)",
                "input",
            )
    if all(part["type"] == "text" for part in chat_parts):
        return "".join(part["text"] for part in chat_parts)
    return chat_parts


def _function_call(where: str, item: dict[str, Any], messages: list[dict[str, Any]]) -> dict:
    for name in ("call_id", "name", "arguments"):
        if not isinstance(item.get(name), str):
            raise bad(f"{where}.{name} must be a string", "input")
    call = {
        "id": item["call_id"],
        "type": "function",
        "function": {"name": item["name"], "arguments": item["arguments"]},
    }
    last = messages[-1] if messages else None
    if last is not None and last["role"] == "assistant":
        last.setdefault("tool_calls", []).append(call)
    else:
        messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
    return {
        "id": item.get("id") if isinstance(item.get("id"), str) else new_id("fc"),
        "type": "function_call",
        "status": "completed",
        "call_id": item["call_id"],
        "name": item["name"],
        "arguments": item["arguments"],
    }


def _function_output(where: str, item: dict[str, Any], messages: list[dict[str, Any]]) -> dict:
    if not isinstance(item.get("call_id"), str):
        raise bad(f"{where}.call_id must be a string", "input")
    output = item.get("output")
    if isinstance(output, list):
        content = _chat_content(f"{where}.output", output)
        if not isinstance(content, str):
            raise bad(f"{where}.output: only text is supported", "input")
    elif isinstance(output, str):
        content = output
    else:
        raise bad(f"{where}.output must be a string or a list of parts", "input")
    messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": content})
    return {
        "id": item.get("id") if isinstance(item.get("id"), str) else new_id("fco"),
        "type": "function_call_output",
        "status": "completed",
        "call_id": item["call_id"],
        "output": output,
    }


# -- tools and formats ---------------------------------------------------------------------


def _chat_tool(i: int, tool: Any) -> dict[str, Any]:
    """A Responses function tool (flat) as chat's (`function` nested)."""
    kind = tool.get("type") if isinstance(tool, dict) else None
    if kind != "function":
        raise bad(
            f"tools[{i}]: {kind!r} tools are not supported, only function tools "
            "(Ember runs no built-in tools)",
            "tools",
        )
    if not isinstance(tool.get("name"), str) or not tool["name"]:
        raise bad(f"tools[{i}].name must be a non-empty string", "tools")
    function = {
        key: tool[key]
        for key in ("name", "description", "parameters", "strict")
        if tool.get(key) is not None
    }
    return {"type": "function", "function": function}


def _chat_tool_choice(choice: Any) -> str | dict[str, Any]:
    if choice in ("none", "auto", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        if not isinstance(choice.get("name"), str):
            raise bad("tool_choice.name must be a string", "tool_choice")
        return {"type": "function", "function": {"name": choice["name"]}}
    raise bad("tool_choice must be none, auto, required or {type: function, name}", "tool_choice")


def _response_format(fmt: Any) -> dict[str, Any] | None:
    """`text.format` as chat's `response_format` (None: plain text)."""
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        schema = {
            key: fmt[key]
            for key in ("name", "schema", "description", "strict")
            if fmt.get(key) is not None
        }
        return {"type": "json_schema", "json_schema": schema}
    raise bad("text.format.type must be text, json_object or json_schema", "text")
