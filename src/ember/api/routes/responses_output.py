"""A chat-completions answer as OpenAI's Responses API gives it: a `response` object with
output items (an assistant `message` holding `output_text`, and one `function_call` item per
tool call), and, for a stream, the events OpenAI sends in OpenAI's order:

    response.created, response.in_progress,
    per message:  response.output_item.added, response.content_part.added,
                  response.output_text.delta ..., response.output_text.done,
                  response.content_part.done, response.output_item.done
    per call:     response.output_item.added, response.function_call_arguments.delta ...,
                  response.function_call_arguments.done, response.output_item.done
    response.completed (response.incomplete when max_output_tokens cut it short,
    response.failed when the generation failed)

each with a `sequence_number` counted from 0. The official clients' stream helpers
(`client.responses.stream`) check that order, so it is kept exactly.
"""

from __future__ import annotations

import time
from typing import Any

from ember.api.routes.responses_input import new_id


def frame(response_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """The response object before any output: what the request asked, echoed as OpenAI
    echoes it (`temperature` and `top_p` are the request's, null when the package's own
    defaults apply)."""
    text = body.get("text") or {}
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()),
        "status": "in_progress",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": body.get("max_tool_calls"),
        "model": body["model"],
        "output": [],
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "prompt_cache_key": body.get("prompt_cache_key"),
        "reasoning": {"effort": None, "summary": None},
        "safety_identifier": body.get("safety_identifier"),
        "service_tier": "default",
        "store": body.get("store", True),
        "temperature": body.get("temperature"),
        "text": {"format": text.get("format") or {"type": "text"}, "verbosity": "medium"},
        "tool_choice": body.get("tool_choice") or "auto",
        "tools": body.get("tools") or [],
        "top_logprobs": body.get("top_logprobs") or 0,
        "top_p": body.get("top_p"),
        "truncation": "disabled",
        "usage": None,
        "user": body.get("user"),
        "metadata": body.get("metadata") or {},
    }


def usage(chat_usage: Any, metrics: dict[str, Any]) -> dict[str, Any] | None:
    """Chat usage in the Responses API's names; a handler that reports none still recorded
    its token counts for the ledger (`input_token_count`, `output_token_count`)."""
    if isinstance(chat_usage, dict) and "prompt_tokens" in chat_usage:
        given, made = chat_usage["prompt_tokens"], chat_usage.get("completion_tokens", 0)
    elif "input_token_count" in metrics or "output_token_count" in metrics:
        given, made = metrics.get("input_token_count", 0), metrics.get("output_token_count", 0)
    else:
        return None
    return {
        "input_tokens": given,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": made,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": given + made,
    }


def finish(response: dict[str, Any], reason: str | None) -> dict[str, Any]:
    """Set the response's end from the chat finish reason: `length` and `content_filter`
    leave it incomplete, as OpenAI's does."""
    incomplete = {"length": "max_output_tokens", "content_filter": "content_filter"}.get(
        reason or ""
    )
    if incomplete:
        response["status"] = "incomplete"
        response["incomplete_details"] = {"reason": incomplete}
    else:
        response["status"] = "completed"
        response["completed_at"] = int(time.time())
    return response


def _text_part(text: str, logprobs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": logprobs}


def _message_item(item_id: str, status: str, parts: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": parts,
    }


def _call_item(item_id: str, status: str, call_id: str, name: str, args: str) -> dict:
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "arguments": args,
        "call_id": call_id,
        "name": name,
    }


def answered(response: dict[str, Any], answer: Any, metrics: dict[str, Any]) -> dict[str, Any]:
    """The whole response for a chat.completion (the first choice: Responses has one)."""
    choices = answer.get("choices") if isinstance(answer, dict) else None
    choice = choices[0] if isinstance(choices, list) and choices else {}
    message = choice.get("message") or {}
    reason = choice.get("finish_reason")
    status = "incomplete" if reason == "length" else "completed"
    output: list[dict[str, Any]] = []
    content, calls = message.get("content"), message.get("tool_calls") or []
    if content or not calls:
        logprobs = (choice.get("logprobs") or {}).get("content") or []
        parts = [_text_part(content or "", logprobs)]
        if message.get("refusal"):
            parts = [{"type": "refusal", "refusal": message["refusal"]}]
        output.append(_message_item(new_id("msg"), status, parts))
    for call in calls:
        function = call.get("function") or {}
        output.append(
            _call_item(
                new_id("fc"),
                "completed",
                call.get("id") or new_id("call"),
                function.get("name", ""),
                function.get("arguments", ""),
            )
        )
    response["output"] = output
    response["usage"] = usage(answer.get("usage") if isinstance(answer, dict) else None, metrics)
    return finish(response, reason)


def conversation(output: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A response's output as the chat messages a later turn (`previous_response_id`)
    shows the model: its text, and its tool calls on the same assistant message."""
    message: dict[str, Any] = {"role": "assistant", "content": None}
    for item in output:
        if item["type"] == "message":
            text = "".join(p.get("text", "") for p in item["content"])
            message["content"] = (message["content"] or "") + text
        elif item["type"] == "function_call":
            call = {"name": item["name"], "arguments": item["arguments"]}
            message.setdefault("tool_calls", []).append(
                {"id": item["call_id"], "type": "function", "function": call}
            )
    if message["content"] is None and "tool_calls" not in message:
        message["content"] = ""
    return [message]


class Events:
    """Chat-completion chunks in, Responses API events out (see the module docstring).

    One output item is open at a time: text opens a message, a tool call a function_call
    item; whichever comes next closes the one before, so every item is added, filled and
    done in turn, as OpenAI streams them."""

    def __init__(self, response: dict[str, Any]) -> None:
        self.response = response
        self.sequence = 0
        self.open: dict[str, Any] | None = None  # the output item being streamed
        self.text = ""
        self.logprobs: list[dict[str, Any]] = []
        self.calls: dict[int, dict[str, Any]] = {}  # chat tool-call index → its item
        self.reason: str | None = None
        self.chat_usage: Any = None

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return event

    def _snapshot(self) -> dict[str, Any]:
        return {**self.response, "output": list(self.response["output"])}

    def start(self) -> list[dict[str, Any]]:
        return [
            self._event("response.created", response=self._snapshot()),
            self._event("response.in_progress", response=self._snapshot()),
        ]

    def chunk(self, chunk: Any) -> list[dict[str, Any]]:
        """The events one chat chunk makes (none for a role-only or usage-only chunk)."""
        if not isinstance(chunk, dict):
            return []
        if chunk.get("usage"):
            self.chat_usage = chunk["usage"]
        events: list[dict[str, Any]] = []
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if delta.get("content"):
                logprobs = (choice.get("logprobs") or {}).get("content") or []
                events += self._text(delta["content"], logprobs)
            for call in delta.get("tool_calls") or []:
                events += self._call(call)
            if choice.get("finish_reason"):
                self.reason = choice["finish_reason"]
        return events

    def whole(self, answer: Any) -> list[dict[str, Any]]:
        """The events of a chat.completion answered whole though a stream was asked for."""
        choices = answer.get("choices") if isinstance(answer, dict) else None
        choice = choices[0] if isinstance(choices, list) and choices else {}
        message = choice.get("message") or {}
        delta = {"content": message.get("content"), "tool_calls": []}
        for i, call in enumerate(message.get("tool_calls") or []):
            delta["tool_calls"].append({**call, "index": i})
        chunk = {
            "choices": [{**choice, "delta": delta}],
            "usage": answer.get("usage") if isinstance(answer, dict) else None,
        }
        return self.chunk(chunk)

    def _text(self, text: str, logprobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        if self.open is None or self.open["type"] != "message":
            events += self._open_message()
        self.text += text
        self.logprobs += logprobs
        events.append(
            self._event(
                "response.output_text.delta",
                item_id=self._open_id(),
                output_index=self._index(),
                content_index=0,
                delta=text,
                logprobs=logprobs,
            )
        )
        return events

    def _open_message(self) -> list[dict[str, Any]]:
        events = self._close()
        events += self._open(_message_item(new_id("msg"), "in_progress", []))
        self.text, self.logprobs = "", []
        events.append(
            self._event(
                "response.content_part.added",
                item_id=self._open_id(),
                output_index=self._index(),
                content_index=0,
                part=_text_part("", []),
            )
        )
        return events

    def _open_id(self) -> str:
        assert self.open is not None
        return self.open["id"]

    def _call(self, call: dict[str, Any]) -> list[dict[str, Any]]:
        index = call.get("index", 0)
        function = call.get("function") or {}
        events: list[dict[str, Any]] = []
        item = self.calls.get(index)
        if item is None:
            events += self._close()
            item = _call_item(
                new_id("fc"),
                "in_progress",
                call.get("id") or new_id("call"),
                function.get("name") or "",
                "",
            )
            self.calls[index] = item
            events += self._open(item)
        elif item is not self.open:
            return events  # a late delta of a call already done: OpenAI's never come back
        arguments = function.get("arguments") or ""
        if arguments:
            item["arguments"] += arguments
            events.append(
                self._event(
                    "response.function_call_arguments.delta",
                    item_id=item["id"],
                    output_index=self._index(),
                    delta=arguments,
                )
            )
        return events

    def _index(self) -> int:
        return len(self.response["output"]) - 1

    def _open(self, item: dict[str, Any]) -> list[dict[str, Any]]:
        self.open = item
        self.response["output"].append(item)
        added = {**item, "content": []} if item["type"] == "message" else dict(item)
        return [self._event("response.output_item.added", output_index=self._index(), item=added)]

    def _close(self) -> list[dict[str, Any]]:
        item = self.open
        if item is None:
            return []
        self.open = None
        index = self._index()
        events: list[dict[str, Any]] = []
        if item["type"] == "message":
            part = _text_part(self.text, self.logprobs)
            item["content"] = [part]
            item["status"] = "incomplete" if self.reason == "length" else "completed"
            where = {"item_id": item["id"], "output_index": index, "content_index": 0}
            events.append(
                self._event(
                    "response.output_text.done", **where, text=self.text, logprobs=self.logprobs
                )
            )
            events.append(self._event("response.content_part.done", **where, part=part))
        else:
            item["status"] = "completed"
            events.append(
                self._event(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=index,
                    name=item["name"],
                    arguments=item["arguments"],
                )
            )
        events.append(self._event("response.output_item.done", output_index=index, item=item))
        return events

    def end(self, metrics: dict[str, Any]) -> list[dict[str, Any]]:
        """Close what is open and finish: response.completed, or response.incomplete. An
        answer with no output at all still gets its (empty) message, as a whole answer
        does."""
        events: list[dict[str, Any]] = []
        if not self.response["output"]:
            events += self._open_message()
        events += self._close()
        self.response["usage"] = usage(self.chat_usage, metrics)
        finish(self.response, self.reason)
        kind = (
            "response.completed"
            if self.response["status"] == "completed"
            else ("response.incomplete")
        )
        events.append(self._event(kind, response=self._snapshot()))
        return events

    def failed(self, message: str, metrics: dict[str, Any]) -> list[dict[str, Any]]:
        """The generation failed mid-stream: close what is open, then response.failed with
        the reason (the status line went out long ago)."""
        events = self._close()
        self.response["status"] = "failed"
        self.response["error"] = {"code": "server_error", "message": message}
        self.response["usage"] = usage(self.chat_usage, metrics)
        events.append(self._event("response.failed", response=self._snapshot()))
        return events
