"""The vLLM engine.

Two halves, so that what is tested where stays honest:

- On any machine: the engine's request checks and OpenAI shaping (chat and completions,
  plain and streamed, n, echo, logprobs, usage, token metrics, context overflow, refusals)
  against a stand-in for vLLM's `AsyncLLM` that generates characters. The stand-in follows
  vLLM's documented output model (RequestOutput / CompletionOutput, DELTA and FINAL_ONLY
  output kinds); it proves the shaping, not vLLM itself.
- On a machine with a CUDA GPU, vLLM installed and EMBER_VLLM_TEST_MODEL naming a small
  model folder: the real engine, plain and streamed chat. Skipped otherwise.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import os
import sys
import types
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from ember import scope
from ember.engines.base import RequestError
from ember.engines.vllm import Engine

REPLY = "Hello there"  # what the stand-in model always says, one character per token

# -- a stand-in for vLLM --------------------------------------------------------------------


class _OutputKind(enum.Enum):
    CUMULATIVE = 0
    DELTA = 1
    FINAL_ONLY = 2


class _ValidationError(Exception):
    """vLLM's VLLMValidationError (a client error, not a ValueError in current vLLM)."""


@dataclasses.dataclass
class _SamplingParams:
    n: int = 1
    max_tokens: int | None = 16
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = dataclasses.field(default_factory=list)
    logprobs: int | None = None
    output_kind: _OutputKind = _OutputKind.CUMULATIVE
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    top_k: int = 0
    logit_bias: dict[int, float] | None = None

    def __post_init__(self) -> None:
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}.")


@dataclasses.dataclass
class _Logprob:
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclasses.dataclass
class _CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None
    logprobs: list[dict[int, _Logprob]] | None
    finish_reason: str | None = None


@dataclasses.dataclass
class _RequestOutput:
    request_id: str
    prompt_token_ids: list[int]
    outputs: list[_CompletionOutput]
    finished: bool


class _Tokenizer:
    """One token per character; id 1 is BOS."""

    chat_template = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}"

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return ([1] if add_special_tokens else []) + [ord(c) for c in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(chr(i) for i in ids if i > 1)

    def apply_chat_template(
        self, messages: list[dict[str, str]], tokenize: bool, add_generation_prompt: bool
    ) -> str:
        if messages[-1]["role"] == "assistant":
            raise ValueError("Conversation roles must end with the user")  # as templates do
        return "\x01" + "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"


class _AsyncLLM:
    def __init__(self, args: Any) -> None:
        self.args = args
        self.model_config = types.SimpleNamespace(
            max_model_len=args.max_model_len or 64,
            get_diff_sampling_param=lambda: {"temperature": 0.6},
        )
        self.submitted: list[tuple[list[int], _SamplingParams]] = []
        self.aborted: list[str] = []

    @classmethod
    def from_engine_args(cls, args: Any) -> _AsyncLLM:
        return cls(args)

    def get_tokenizer(self) -> _Tokenizer:
        return _Tokenizer()

    async def generate(
        self, prompt: dict[str, Any], params: _SamplingParams, request_id: str
    ) -> AsyncIterator[_RequestOutput]:
        ids = prompt["prompt_token_ids"]
        if any(i > 0x10FFFF for i in ids):
            raise _ValidationError("Token id out of vocabulary")
        self.submitted.append((ids, params))
        texts = []
        for _ in range(params.n):
            text, finish = REPLY[: params.max_tokens], "length"
            if len(text) == len(REPLY):
                finish = "stop"
            for s in params.stop:
                if s in text:
                    text, finish = text[: text.index(s)], "stop"
            texts.append((text, finish))

        def out(k: int, text: str, finish: str | None) -> _CompletionOutput:
            logprobs = None
            if params.logprobs is not None:
                logprobs = [
                    {ord(c): _Logprob(-0.5, 1, c), ord("z"): _Logprob(-2.0, 2, "z")} for c in text
                ]
            return _CompletionOutput(k, text, [ord(c) for c in text], None, logprobs, finish)

        try:
            if params.output_kind == _OutputKind.FINAL_ONLY:
                await asyncio.sleep(0)
                outputs = [out(k, text, finish) for k, (text, finish) in enumerate(texts)]
                yield _RequestOutput(request_id, ids, outputs, True)
                return
            longest = max(len(text) for text, _ in texts)
            for position in range(longest):
                await asyncio.sleep(0)
                outputs = []
                for k, (text, finish) in enumerate(texts):
                    if position < len(text):
                        last = position == len(text) - 1
                        outputs.append(out(k, text[position], finish if last else None))
                yield _RequestOutput(request_id, ids, outputs, position == longest - 1)
        except (GeneratorExit, asyncio.CancelledError):
            self.aborted.append(request_id)
            raise


@dataclasses.dataclass
class _AsyncEngineArgs:
    model: str
    max_model_len: int | None = None
    gpu_memory_utilization: float = 0.9
    disable_log_stats: bool = False


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Engine:
    """An Engine set up on the stand-in (a 64-token context)."""
    modules = {
        "vllm": {
            "AsyncEngineArgs": _AsyncEngineArgs,
            "SamplingParams": _SamplingParams,
            "AsyncLLMEngine": _AsyncLLM,
        },
        "vllm.inputs": {
            "TokensPrompt": lambda prompt_token_ids: {"prompt_token_ids": prompt_token_ids}
        },
        "vllm.sampling_params": {"RequestOutputKind": _OutputKind},
        "vllm.exceptions": {"VLLMValidationError": _ValidationError},
    }
    for name, attributes in modules.items():
        module = types.ModuleType(name)
        module.__dict__.update(attributes)
        monkeypatch.setitem(sys.modules, name, module)
    sys.modules["vllm"].exceptions = sys.modules["vllm.exceptions"]  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vllm.v1.engine.async_llm", None)  # an older layout
    engine = Engine(Path("/models/tiny"), {"max_model_len": 64})
    asyncio.run(engine.setup())
    return engine


def _run(coroutine: Any) -> tuple[Any, dict[str, Any]]:
    """Run a handler in a prediction's scope: (its result, streamed chunks drained into a
    list), and the metrics it recorded."""

    async def go() -> Any:
        token = scope.enter(scope.Scope("p1"))
        try:
            result = await coroutine
            if isinstance(result, AsyncIterator):
                result = [chunk async for chunk in result]
            return result, scope.current_scope().metrics
        finally:
            scope.leave(token)

    return asyncio.run(go())


CHAT = {"model": "ember/tiny", "messages": [{"role": "user", "content": "Hi"}]}


def test_chat_answer_usage_and_metrics(fake: Engine) -> None:
    answer, metrics = _run(fake.chat_completions({**CHAT, "max_tokens": 5, "seed": 3}))
    prompt = len("\x01<user>Hi<assistant>")
    assert answer["object"] == "chat.completion" and answer["id"] == "chatcmpl-p1"
    assert answer["model"] == "ember/tiny"
    assert answer["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello", "refusal": None},
            "logprobs": None,
            "finish_reason": "length",
        }
    ]
    assert answer["usage"] == {
        "prompt_tokens": prompt,
        "completion_tokens": 5,
        "total_tokens": prompt + 5,
    }
    assert metrics["input_token_count"] == prompt and metrics["output_token_count"] == 5
    ids, params = fake.engine.submitted[-1]
    assert ids[0] == 1 and ids.count(1) == 1  # the template's BOS, none added on top
    assert params.seed == 3 and params.temperature == 0.6  # the model's own default
    assert params.output_kind == _OutputKind.FINAL_ONLY


def test_chat_stream_n_and_usage(fake: Engine) -> None:
    request = {
        **CHAT,
        "stream": True,
        "n": 2,
        "stop": "e",
        "stream_options": {"include_usage": True},
    }
    chunks, metrics = _run(fake.chat_completions(request))
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert [c["choices"][0]["delta"] for c in chunks[:2]] == [
        {"role": "assistant", "content": "", "refusal": None},
        {"role": "assistant", "content": "", "refusal": None},
    ]
    texts = {0: "", 1: ""}
    finishes = {}
    for chunk in chunks[2:-1]:
        assert chunk["usage"] is None  # null on every chunk but the last, as OpenAI sends
        (choice,) = chunk["choices"]
        texts[choice["index"]] += choice["delta"].get("content", "")
        if choice["finish_reason"]:
            finishes[choice["index"]] = choice["finish_reason"]
    assert texts == {0: "H", 1: "H"} and finishes == {0: "stop", 1: "stop"}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 2
    assert metrics["output_token_count"] == 2


def test_chat_logprobs(fake: Engine) -> None:
    answer, _ = _run(
        fake.chat_completions({**CHAT, "max_tokens": 2, "logprobs": True, "top_logprobs": 1})
    )
    content = answer["choices"][0]["logprobs"]["content"]
    assert [e["token"] for e in content] == ["H", "e"]
    assert content[0]["logprob"] == -0.5 and content[0]["bytes"] == [72]
    assert content[0]["top_logprobs"] == [{"token": "H", "logprob": -0.5, "bytes": [72]}]


def test_completions_prompts_echo_and_logprobs(fake: Engine) -> None:
    request = {"model": "m", "prompt": ["ab", "xy"], "n": 2, "max_tokens": 3, "echo": True}
    answer, metrics = _run(fake.completions(request))
    assert answer["object"] == "text_completion" and answer["id"] == "cmpl-p1"
    assert [(c["index"], c["text"]) for c in answer["choices"]] == [
        (0, "abHel"),
        (1, "abHel"),
        (2, "xyHel"),
        (3, "xyHel"),
    ]
    assert answer["usage"]["prompt_tokens"] == 3 + 3  # BOS added to text prompts
    assert metrics["output_token_count"] == 12
    ids, _ = _run(fake.completions({"model": "m", "prompt": [120, 121], "echo": True}))
    assert ids["choices"][0]["text"] == "xyHello there"  # all of it: 16 tokens by default
    assert fake.engine.submitted[-1][1].max_tokens == 16
    assert ids["usage"]["prompt_tokens"] == 2  # token ids go as they are
    chunks, _ = _run(
        fake.completions(
            {"model": "m", "prompt": "ab", "max_tokens": 2, "logprobs": 1, "stream": True}
        )
    )
    assert "".join(c["choices"][0]["text"] for c in chunks) == "He"
    # Offsets count from the prompt's start, echoed or not, as OpenAI's do.
    assert [c["choices"][0]["logprobs"]["text_offset"] for c in chunks] == [[2], [3]]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


@pytest.mark.parametrize(
    ("handler", "request_fields", "param"),
    [
        ("chat_completions", {"max_tokens": 60}, "max_tokens"),  # prompt + 60 > 64
        ("chat_completions", {"messages": [{"role": "user", "content": "x" * 70}]}, "messages"),
        ("chat_completions", {"tools": [{"type": "function"}]}, "tools"),
        ("chat_completions", {"response_format": {"type": "json_object"}}, "response_format"),
        ("chat_completions", {"top_logprobs": 2}, "top_logprobs"),
        ("chat_completions", {"messages": [{"role": "assistant", "content": "x"}]}, "messages"),
        (
            "chat_completions",
            {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            "messages",
        ),
        ("chat_completions", {"top_p": 0}, None),  # vLLM's own check, as a 400
        ("completions", {"prompt": [0x110000]}, None),  # refused by vLLM: a 400 too
        ("completions", {"prompt": "ab", "echo": True, "logprobs": 1}, "echo"),
        ("completions", {"prompt": []}, "prompt"),
        ("chat_completions", {"logit_bias": {"not-a-token": 5}}, "logit_bias"),
        ("chat_completions", {"logit_bias": {"72": "high"}}, "logit_bias"),
        ("completions", {"prompt": "ab", "logit_bias": [72]}, "logit_bias"),
    ],
)
def test_refusals_are_request_errors(
    fake: Engine, handler: str, request_fields: dict[str, Any], param: str | None
) -> None:
    request = {**CHAT, **request_fields}
    if handler == "completions":
        request.pop("messages")
    with pytest.raises(RequestError) as caught:
        _run(getattr(fake, handler)(request))
    assert caught.value.param == param


def test_closing_a_stream_aborts_the_request(fake: Engine) -> None:
    async def go() -> None:
        stream = await fake.chat_completions({**CHAT, "stream": True})
        await anext(stream)
        await stream.aclose()

    asyncio.run(go())
    assert fake.engine.aborted


def test_logit_bias_goes_to_vllm_by_token_id(fake: Engine) -> None:
    fake.engine.submitted.clear()
    _run(fake.completions({"model": "m", "prompt": "ab", "logit_bias": {"72": -100}}))
    assert fake.engine.submitted[-1][1].logit_bias == {72: -100.0}


def test_a_prompt_canceled_midway_fails_the_request_instead_of_hanging(
    fake: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = fake.engine.generate

    async def generate(prompt: dict[str, Any], *args: Any) -> AsyncIterator[Any]:
        async for output in real(prompt, *args):
            yield output
            if ord("!") in prompt["prompt_token_ids"]:
                raise asyncio.CancelledError  # as when vLLM's side of the prompt is torn down

    monkeypatch.setattr(fake.engine, "generate", generate)
    request = {"model": "m", "prompt": ["ab", "x!"], "max_tokens": 3, "stream": True}

    async def drain() -> list[dict[str, Any]]:
        return [chunk async for chunk in await fake.completions(request)]

    with pytest.raises(RuntimeError, match="prompt 1 was canceled"):
        asyncio.run(asyncio.wait_for(drain(), timeout=5))  # not a hang


def test_predict_streams_text(fake: Engine) -> None:
    async def go() -> list[str]:
        return [piece async for piece in fake.predict(prompt="Hi", max_tokens=4)]

    assert "".join(asyncio.run(go())) == "Hell"
    _, params = fake.engine.submitted[-1]
    assert params.temperature == 0.7 and params.output_kind == _OutputKind.DELTA


# -- the real thing, on a GPU ---------------------------------------------------------------


def test_real_vllm_chat_plain_and_streamed() -> None:
    pytest.importorskip("vllm")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("vLLM needs a CUDA GPU")
    model = os.environ.get("EMBER_VLLM_TEST_MODEL")
    if not model:
        pytest.skip(
            "set EMBER_VLLM_TEST_MODEL to a small model folder (e.g. Qwen2.5-0.5B-Instruct)"
        )
    engine = Engine(Path(model), {"max_model_len": 2048, "gpu_memory_utilization": 0.4})

    async def go() -> None:
        await engine.setup()
        question = {"model": "m", "messages": [{"role": "user", "content": "Count to five."}]}
        answer = await engine.chat_completions({**question, "max_tokens": 32, "temperature": 0})
        assert answer["choices"][0]["message"]["content"]
        assert 0 < answer["usage"]["completion_tokens"] <= 32
        stream = await engine.chat_completions(
            {
                **question,
                "max_tokens": 32,
                "temperature": 0,
                "stream": True,
                "stream_options": {"include_usage": True},
            }
        )
        chunks = [chunk async for chunk in stream]
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
        assert text == answer["choices"][0]["message"]["content"]  # greedy: the same answer
        assert chunks[-1]["usage"] == answer["usage"]
        with pytest.raises(RequestError):
            await engine.chat_completions({**question, "max_tokens": 4096})

    asyncio.run(go())
