"""A predictor that serves OpenAI's routes itself (no engine): the chat answer echoes the last
user message word by word, embeddings are [length, vowels, 1.0] per text. Lets the gateway's
OpenAI face be tested in a second, without a model."""

import base64
import struct
import time

from ember import ConcatenateIterator, record_metric
from ember.engines.base import RequestError

CONTEXT = 64


def _words(request):
    if request.get("max_tokens", 0) > CONTEXT:
        raise RequestError(f"max_tokens must be at most {CONTEXT}", param="max_tokens")
    last = [m for m in request["messages"] if m["role"] == "user"][-1]["content"]
    words = last.split()
    record_metric("input_token_count", sum(len(m["content"].split()) for m in request["messages"]))
    record_metric("output_token_count", len(words))
    return words


def _chunk(request, index, delta, finish=None):
    return {
        "id": "chatcmpl-echo",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": request["model"],
        "choices": [{"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}],
    }


class Predictor:
    def predict(self, text: str) -> ConcatenateIterator[str]:
        for word in text.split():
            yield word + " "

    def chat_completions(self, request):
        words = _words(request)
        delay = float(request.get("delay", 0))
        if request.get("stream"):
            return self._stream(request, words, delay)
        text = " ".join(words)
        return {
            "id": "chatcmpl-echo",
            "object": "chat.completion",
            "created": 1,
            "model": request["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": len(words), "total_tokens": 1 + len(words)},
        }

    def _stream(self, request, words, delay):
        yield _chunk(request, 0, {"role": "assistant", "content": ""})
        for i, word in enumerate(words):
            if request.get("fail_at") == i:
                raise RuntimeError("engine crashed mid-stream")
            time.sleep(delay)
            yield _chunk(request, 0, {"content": word if i == 0 else " " + word})
        yield _chunk(request, 0, {}, "stop")

    def completions(self, request):
        return {
            "id": "cmpl-echo",
            "object": "text_completion",
            "created": 1,
            "model": request["model"],
            "choices": [{"index": 0, "text": request["prompt"][::-1], "finish_reason": "stop", "logprobs": None}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }

    def embeddings(self, request):
        texts = request["input"] if isinstance(request["input"], list) else [request["input"]]
        data = []
        for i, text in enumerate(texts):
            vector = [float(len(text)), float(sum(c in "aeiou" for c in text)), 1.0]
            if request.get("encoding_format") == "base64":
                vector = base64.b64encode(struct.pack("<3f", *vector)).decode()
            data.append({"object": "embedding", "index": i, "embedding": vector})
        tokens = sum(len(t.split()) for t in texts)
        return {"object": "list", "data": data, "model": request["model"], "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
