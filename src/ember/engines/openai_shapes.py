"""The engine-independent half of serving OpenAI's chat and completions API: reading the
request's fields the way OpenAI defines them, and building the response, chunk and usage
objects OpenAI's clients parse. An engine supplies only the generation.

Kept apart so every LLM engine (vLLM, llama.cpp) answers in exactly the same shapes, and so
this part can be read, and tested, without a GPU or a model. Standard library only: it runs
in model environments.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

from ember.engines.base import RequestError
from ember.scope import current_scope_or_none

# Fields of OpenAI's chat and completions requests every engine reads the same way.
COMMON_FIELDS = {
    "model",
    "max_tokens",
    "temperature",
    "top_p",
    "n",
    "stream",
    "stream_options",
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "user",
    "logprobs",
}
# Fields that change nothing about a self-hosted model's answer (OpenAI's own bookkeeping
# and routing): accepted and ignored.
IGNORED_FIELDS = {
    "metadata",
    "store",
    "service_tier",
    "prompt_cache_key",
    "safety_identifier",
    "parallel_tool_calls",
    "modalities",
}
CHAT_FIELDS = COMMON_FIELDS | IGNORED_FIELDS
CHAT_FIELDS |= {"messages", "max_completion_tokens", "top_logprobs", "tools", "tool_choice"}
COMPLETION_FIELDS = COMMON_FIELDS | IGNORED_FIELDS | {"prompt", "echo", "best_of"}
# Sampling fields vLLM's server adds to OpenAI's, which the gateway passes through; engines
# that honour them add them to the fields they accept.
VLLM_SAMPLING_FIELDS = {"top_k", "min_p", "repetition_penalty"}
DEFAULT_COMPLETION_TOKENS = 16  # OpenAI's default max_tokens for /v1/completions


@dataclass
class Asked:
    """What a chat or completions request asks of the generation besides its prompt and its
    sampling, read the same way for every engine."""

    n: int
    max_tokens: int | None  # None: up to the rest of the context (see check_context)
    stop: list[str]
    top_logprobs: int | None  # None: no logprobs; k: the token's own and the k likeliest
    echo: bool = False


def chat_request(
    request: dict[str, Any], extra: set[str], engine: str, tools: bool = False
) -> Asked:
    """A chat request's fields checked (the engine accepts OpenAI's, and `extra`) and read.
    `max_completion_tokens` wins over its older name `max_tokens`; without either, the answer
    may take the rest of the context, as OpenAI's does. An engine that does not call tools
    (`tools` false) refuses them here; one that does checks them itself."""
    reject_unknown(request, CHAT_FIELDS | extra, engine)
    for name in ("tools", "tool_choice"):
        if not tools and request.get(name) not in (None, [], "none"):
            raise RequestError(f"{name}: the {engine} engine does not call tools", param=name)
    top = request.get("top_logprobs")
    if top is not None and not request.get("logprobs"):
        raise RequestError("top_logprobs needs logprobs: true", param="top_logprobs")
    max_tokens = request.get("max_completion_tokens")
    return Asked(
        n=_n(request),
        max_tokens=request.get("max_tokens") if max_tokens is None else max_tokens,
        stop=stop_strings(request.get("stop")),
        top_logprobs=(top or 0) if request.get("logprobs") else None,
    )


def completion_request(request: dict[str, Any], extra: set[str], engine: str) -> Asked:
    """A completions request's fields checked (the engine accepts OpenAI's, and `extra`) and
    read; `max_tokens` defaults to OpenAI's 16."""
    reject_unknown(request, COMPLETION_FIELDS | extra, engine)
    n = _n(request)
    if request.get("best_of") not in (None, n):
        raise RequestError("best_of: only best_of == n is supported", param="best_of")
    echo = bool(request.get("echo"))
    logprobs = request.get("logprobs")
    if echo and logprobs is not None:
        raise RequestError(
            "echo with logprobs is not supported: the prompt's logprobs are not computed",
            param="echo",
        )
    max_tokens = request.get("max_tokens")
    return Asked(
        n=n,
        max_tokens=DEFAULT_COMPLETION_TOKENS if max_tokens is None else max_tokens,
        stop=stop_strings(request.get("stop")),
        top_logprobs=logprobs,
        echo=echo,
    )


def _n(request: dict[str, Any]) -> int:
    n = request.get("n")
    if n is None:
        return 1
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise RequestError("n must be a positive integer", param="n")
    return n


def reject_unknown(request: dict[str, Any], known: set[str], engine: str) -> None:
    """Refuse fields the engine cannot honour: answering as if they were applied would be
    worse than a 400 that names them."""
    for name in request:
        if name not in known:
            raise RequestError(f"{name} is not supported by the {engine} engine", param=name)


def chat_messages(raw: list[dict[str, Any]], tools: bool = False) -> list[dict[str, Any]]:
    """OpenAI messages as chat templates take them: text content (parts joined), and the
    `developer` role as `system`, which templates know. With `tools` (an engine that calls
    them), an assistant message's `tool_calls` and a tool message's `tool_call_id` are kept
    (checked); without, a message with tool calls is refused."""
    if not isinstance(raw, list) or not raw:
        raise RequestError("messages must be a non-empty list", param="messages")
    messages = []
    for i, message in enumerate(raw):
        calls = message.get("tool_calls")
        if calls and not tools:
            raise RequestError(f"messages[{i}]: tool calls are not supported", param="messages")
        content = message.get("content")
        if isinstance(content, list):
            texts = []
            for part in content:
                kind = part.get("type")
                if kind != "text":
                    raise RequestError(
                        f"messages[{i}]: {kind} content is not supported, only text",
                        param="messages",
                    )
                texts.append(part.get("text") or "")
            content = "".join(texts)
        role = "system" if message.get("role") == "developer" else message.get("role")
        entry: dict[str, Any] = {"role": str(role), "content": content or ""}
        if message.get("name"):
            entry["name"] = str(message["name"])
        if calls:
            entry["tool_calls"] = [_tool_call(i, j, call) for j, call in enumerate(calls)]
        if tools and role == "tool":
            entry["tool_call_id"] = str(message.get("tool_call_id") or "")
        messages.append(entry)
    return messages


def _tool_call(i: int, j: int, call: Any) -> dict[str, Any]:
    """A tool call of an earlier assistant message, checked: {id, type, function: {name,
    arguments}} with arguments a JSON string, as OpenAI's answers give them."""
    function = call.get("function") if isinstance(call, dict) else None
    if (
        not isinstance(function, dict)
        or not isinstance(function.get("name"), str)
        or not isinstance(function.get("arguments"), str)
    ):
        raise RequestError(
            f"messages[{i}].tool_calls[{j}]: expected {{id, type: function, function: "
            "{name, arguments}}} with arguments a JSON string",
            param="messages",
        )
    return {
        "id": str(call.get("id") or ""),
        "type": "function",
        "function": {"name": function["name"], "arguments": function["arguments"]},
    }


def prompts(prompt: Any) -> list[str | list[int]]:
    """The completions API's four prompt forms (text, texts, token ids, lists of token ids)
    as a list of prompts, each text or token ids."""
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt:
        if all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
            return [prompt]
        if all(isinstance(p, str) for p in prompt):
            return list(prompt)
        if all(isinstance(p, list) and p and all(isinstance(t, int) for t in p) for p in prompt):
            return list(prompt)
    raise RequestError(
        "prompt must be a string, a list of strings, token ids or lists of token ids",
        param="prompt",
    )


def stop_strings(stop: str | list[str] | None) -> list[str]:
    """`stop` as a list (OpenAI takes one string or up to 4)."""
    if stop is None:
        return []
    if isinstance(stop, str):
        return [stop] if stop else []
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        return [s for s in stop if s]
    raise RequestError("stop must be a string or a list of strings", param="stop")


# For engines that look for stop strings themselves (llama.cpp): OpenAI's answer ends before
# the first stop string, which is not part of it, and a stream never shows any of it.


def stop_index(text: str, stop: list[str], since: int = 0) -> int | None:
    """Where the first stop string in `text` (from `since` on) starts, or None."""
    found = [i for i in (text.find(x, since) for x in stop) if i >= 0]
    return min(found) if found else None


def held_back(text: str, stop: list[str]) -> int:
    """How many trailing characters of `text` a stream holds back: they could be the start
    of a stop string that the next tokens complete."""
    held = 0
    for x in stop:
        for n in range(min(len(x) - 1, len(text)), held, -1):
            if text.endswith(x[:n]):
                held = n
                break
    return held


def check_context(
    prompt_tokens: int, max_tokens: int | None, context_length: int, where: str
) -> int:
    """The completion's token budget, or a RequestError when the prompt (plus the tokens
    asked for) does not fit the context. `where` names the prompt's field: "messages" or
    "prompt". Without `max_tokens`, the budget is what the context has left."""
    if prompt_tokens >= context_length:
        raise RequestError(
            f"This model's maximum context length is {context_length} tokens, but the "
            f"{where} take {prompt_tokens} tokens, leaving none for the completion. "
            f"Shorten the {where}.",
            param=where,
        )
    if max_tokens is None:
        return context_length - prompt_tokens
    if prompt_tokens + max_tokens > context_length:
        raise RequestError(
            f"This model's maximum context length is {context_length} tokens. However, you "
            f"requested {prompt_tokens + max_tokens} tokens ({prompt_tokens} in the {where}, "
            f"{max_tokens} in the completion). Shorten the {where} or lower max_tokens.",
            param="max_tokens",
        )
    return max_tokens


def finish_reason(reason: str | None) -> str | None:
    """OpenAI's finish reasons: `length` when the token budget ran out, else `stop`."""
    if reason is None:
        return None
    return "length" if reason == "length" else "stop"


def usage(
    prompt_tokens: int, completion_tokens: int, cached_tokens: int | None = None
) -> dict[str, Any]:
    """OpenAI's usage object; with `cached_tokens` (prompt tokens the engine found already
    evaluated), its ``prompt_tokens_details`` too."""
    counts: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    if cached_tokens is not None:
        counts["prompt_tokens_details"] = {"cached_tokens": cached_tokens}
    return counts


class Answer:
    """The fields every object of one response shares, and OpenAI's envelopes around them.

    `kind` is "chat" (chat.completion / chat.completion.chunk) or "text" (text_completion,
    whose chunks carry the same object name). The id ends in the prediction's id, so a
    response can be found in Ember's history.
    """

    def __init__(self, request: dict[str, Any], kind: str, fingerprint: str | None = None) -> None:
        scope = current_scope_or_none()
        suffix = scope.prediction_id if scope else uuid.uuid4().hex
        self.kind = kind
        self.id = ("chatcmpl-" if kind == "chat" else "cmpl-") + suffix
        self.object = "chat.completion" if kind == "chat" else "text_completion"
        self.chunk_object = "chat.completion.chunk" if kind == "chat" else "text_completion"
        self.model = request.get("model", "")
        self.created = int(time.time())
        self.fingerprint = fingerprint
        self.include_usage = bool((request.get("stream_options") or {}).get("include_usage"))

    def body(self, obj: str, choices: list[dict[str, Any]], usage: dict[str, int] | None) -> dict:
        return {
            "id": self.id,
            "object": obj,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": self.fingerprint,
            "choices": choices,
            "usage": usage,
        }

    def response(self, choices: list[dict[str, Any]], usage: dict[str, int]) -> dict[str, Any]:
        """The whole (non-streamed) answer."""
        return self.body(self.object, choices, usage)

    def chunk(self, choice: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        """One streamed chunk with one choice; `usage` is null on it when the client asked
        for usage (OpenAI sends it only on the last, choice-less chunk)."""
        choice["finish_reason"] = finish_reason
        chunk = self.body(self.chunk_object, [choice], None)
        if not self.include_usage:
            del chunk["usage"]
        return chunk

    def usage_chunk(self, usage: dict[str, int]) -> dict[str, Any]:
        """The final chunk of a stream with `stream_options.include_usage`."""
        return self.body(self.chunk_object, [], usage)


# -- choices --------------------------------------------------------------------------------


def chat_choice(
    index: int,
    content: str | None,
    finish: str | None,
    logprobs: dict[str, Any] | None = None,
    tool_calls: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {"index": index, "message": message, "logprobs": logprobs, "finish_reason": finish}


def chat_delta(
    index: int, delta: dict[str, Any], logprobs: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A streamed chat choice (Answer.chunk sets its finish_reason): the first delta of a
    choice carries the role (chat_role_delta), later ones the new text."""
    return {"index": index, "delta": delta, "logprobs": logprobs}


def chat_role_delta(index: int) -> dict[str, Any]:
    """A choice's first streamed delta, which names its role (as OpenAI sends it)."""
    return chat_delta(index, {"role": "assistant", "content": "", "refusal": None})


def text_choice(
    index: int, text: str, finish: str | None = None, logprobs: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish}


# -- logprobs -------------------------------------------------------------------------------


class TokenLogprob(NamedTuple):
    """One generated token: its logprob and the likeliest tokens at its place.

    A token is its text, or its bytes where the engine has them: a token may hold part of a
    UTF-8 character (its text then shows U+FFFD), and OpenAI's `bytes` field is what lets a
    client put such tokens back together."""

    token: str | bytes
    logprob: float
    top: list[tuple[str | bytes, float]]  # (token, logprob), likeliest first
    offset: int | None = None  # where it starts in the generated text; None: where the
    # token before it ends


def token_text(token: str | bytes) -> str:
    return token.decode("utf-8", errors="replace") if isinstance(token, bytes) else token


def token_bytes(token: str | bytes) -> list[int]:
    return list(token if isinstance(token, bytes) else token.encode("utf-8"))


def chat_logprobs(tokens: Iterable[TokenLogprob]) -> dict[str, Any]:
    """The chat API's `logprobs` object: per token its text, logprob, UTF-8 bytes, and the
    top alternatives."""

    def entry(token: str | bytes, logprob: float) -> dict[str, Any]:
        return {"token": token_text(token), "logprob": logprob, "bytes": token_bytes(token)}

    content = [
        {**entry(t.token, t.logprob), "top_logprobs": [entry(x, lp) for x, lp in t.top]}
        for t in tokens
    ]
    return {"content": content, "refusal": None}


def text_logprobs(tokens: Iterable[TokenLogprob], offset: int = 0) -> dict[str, Any]:
    """The completions API's `logprobs` object. Its `text_offset` counts from the start of
    the prompt, echoed or not, as OpenAI's does: `offset` is where the generated text starts
    (the prompt's length), and a token's own offset counts from there. Tokens without one
    follow each other from `offset` on (then a stream's chunk adds what earlier chunks
    carried)."""
    out: dict[str, Any] = {
        "tokens": [],
        "token_logprobs": [],
        "top_logprobs": [],
        "text_offset": [],
    }
    at = 0
    for t in tokens:
        text = token_text(t.token)
        at = at if t.offset is None else t.offset
        out["tokens"].append(text)
        out["token_logprobs"].append(t.logprob)
        out["top_logprobs"].append({token_text(x): lp for x, lp in t.top})
        out["text_offset"].append(offset + at)
        at += len(text)
    return out
