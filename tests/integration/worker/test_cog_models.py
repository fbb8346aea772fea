"""Acceptance tests: the Cog test models in tests/models/cog run unchanged on Ember.

Everything here goes through real replica worker processes (LocalRuntime): schema parity with
the golden documents real Cog 0.16.12 produced, every output kind (value, stream, files,
object), Cog's input constraints as Ember's validator enforces them, concurrency, metrics,
secrets, and the `cog` import shim. Nothing of Ember's own is mocked.
"""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import json
import shutil
import struct
import sys
import uuid
import zlib
from pathlib import Path
from typing import Any

import pytest

import ember
from ember.packages import cog as cog_format
from ember.packages.loader import load_predictor, read_package
from ember.packages.schema import openapi_schema
from ember.runtime.base import PredictionRequest, replace_files
from ember.runtime.local import LocalRuntime
from ember.runtime.local_replica import LocalReplica
from tests.support.paths import MODELS, model_path
from tests.support.replicas import Run, predict, with_replica

COG_MODELS = MODELS / "cog"
GOLDEN = "schema.cog-0.16.12.json"
GOLDEN_MODELS = sorted(p.parent.name for p in COG_MODELS.glob(f"*/{GOLDEN}"))


# -- helpers ---------------------------------------------------------------------------


def pid(label: str = "p") -> str:
    """A prediction id unique to this test run: output folders are keyed by id."""
    return f"{label}-{uuid.uuid4().hex[:10]}"


def data_uri(data: bytes, mime: str = "application/octet-stream") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def golden(name: str) -> dict[str, Any]:
    return json.loads((COG_MODELS / name / GOLDEN).read_text())


def run_many(runtime: LocalRuntime, path: str | Path, inputs: list[dict[str, Any]]) -> list[Run]:
    """Run several predictions one after another on one replica."""

    async def body(replica: LocalReplica) -> list[Run]:
        return [await predict(replica, pid(), input=i) for i in inputs]

    return with_replica(runtime, path, body)


def files_in(result: Any) -> Any:
    """result.output with each file marker replaced by that file's bytes."""
    return replace_files(result.output, lambda p: p.read_bytes(), result.files_dir)


def assert_succeeded(run: Run) -> None:
    assert run.result.status == "succeeded", (run.result.error, run.result.validation_errors)


def assert_rejected(run: Run, field: str) -> None:
    """The input was refused before predict() ran, with the error naming `field`."""
    result = run.result
    assert result.status == "failed", result
    assert result.validation_errors, result
    locs = {tuple(e["loc"][:2]) for e in result.validation_errors}
    assert locs == {("input", field)}, result.validation_errors
    assert result.error and field in result.error, result.error
    assert result.output is None
    assert not [e for e in run.events if e.type in ("started", "output")], run.events


# -- tiny PNG codec (stdlib only, so the test process needs no pillow) ---------------------


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def make_png(width: int, height: int) -> bytes:
    """An 8-bit RGB PNG with a colour pattern (so blurring visibly changes pixels)."""
    rows = []
    for y in range(height):
        row = bytearray([0])  # filter type None
        for x in range(width):
            row += bytes(((x * 37) % 256, (y * 59) % 256, 255 if (x + y) % 2 else 0))
        rows.append(bytes(row))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(b"".join(rows)))
        + _chunk(b"IEND", b"")
    )


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


def read_png(data: bytes) -> tuple[int, int, int, list[bytes]]:
    """Check a PNG's structure and CRCs; return (width, height, channels, pixel rows)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG signature"
    pos, chunks = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert zlib.crc32(kind + body) & 0xFFFFFFFF == crc, f"bad CRC in {kind!r}"
        chunks.append((kind, body))
        pos += 12 + length
    assert chunks[0][0] == b"IHDR" and chunks[-1][0] == b"IEND"
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert depth == 8 and interlace == 0, (depth, interlace)
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour]
    raw = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    stride = width * channels
    assert len(raw) == height * (stride + 1)
    rows: list[bytes] = []
    previous = bytes(stride)
    for y in range(height):
        kind, line = (
            raw[y * (stride + 1)],
            bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)]),
        )
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up, up_left = previous[i], previous[i - channels] if i >= channels else 0
            predictor = (0, left, up, (left + up) // 2, _paeth(left, up, up_left))[kind]
            line[i] = (line[i] + predictor) % 256
        previous = bytes(line)
        rows.append(previous)
    return width, height, channels, rows


# -- 1. schema parity --------------------------------------------------------------------


def test_golden_schemas_are_found():
    models = {p.name for p in COG_MODELS.iterdir() if (p / "cog.yaml").is_file()}
    assert "hello-runner" in models and "hello-runner" not in GOLDEN_MODELS  # Cog 0.16 can't
    assert len(GOLDEN_MODELS) >= 20  # the parametrization below really covers the models


@pytest.mark.parametrize("name", GOLDEN_MODELS)
def test_schema_matches_cog_0_16_12(name):
    spec = read_package(model_path("cog", name))
    try:
        predictor = load_predictor(spec)
    except ModuleNotFoundError as exc:
        if not spec.requirements:
            raise
        # blur imports pillow, which the dev venv may lack; its replica, in its own
        # environment, reports the same schema and test_blur_... compares that one.
        pytest.skip(f"{name} needs {exc.name} from its requirements in this process")
    schema = openapi_schema(predictor)
    expected = golden(name)
    # Compare the parts first for a readable diff, then the whole document.
    assert schema["components"]["schemas"]["Input"] == expected["components"]["schemas"]["Input"]
    assert schema["components"]["schemas"]["Output"] == expected["components"]["schemas"]["Output"]
    assert schema == expected


def test_cog_017_runner_loads_describes_and_runs(runtime):
    spec = read_package(model_path("cog", "hello-runner"))
    assert spec.format == "cog" and spec.predictor == "predict.py:Runner"  # from `run:`
    schema = openapi_schema(load_predictor(spec))["components"]["schemas"]
    assert schema["Input"]["properties"] == {
        "name": {
            "title": "Name",
            "description": "Who to greet",
            "type": "string",
            "default": "runner",
            "x-order": 0,
        }
    }
    assert "required" not in schema["Input"]
    assert schema["Output"] == {"title": "Output", "type": "string"}

    runs = run_many(runtime, model_path("cog", "hello-runner"), [{}, {"name": "ada"}])
    for run in runs:
        assert_succeeded(run)
    assert [r.result.output for r in runs] == ["hello runner", "hello ada"]
    assert runs[0].replica.schema["components"]["schemas"]["Input"] == schema["Input"]


# -- 2. each model, unchanged, in a replica ---------------------------------------------


def test_hello_world(runtime):
    runs = run_many(runtime, model_path("cog", "hello-world"), [{"text": "alice"}, {"text": "bob"}])
    for run in runs:
        assert_succeeded(run)
        assert run.result.metrics["predict_time"] > 0
        assert [e.type for e in run.events] == ["started"]
    assert [r.result.output for r in runs] == ["hello alice", "hello bob"]
    replica = runs[0].replica
    assert replica.schema == golden("hello-world")  # what the worker itself reports


def test_canary_streams_concatenate_iterator_chunks(runtime):
    (run,) = run_many(runtime, model_path("cog", "canary"), [{"text": "bob"}])
    assert_succeeded(run)
    chunks = ["hello", " ", "bob", ",", " ", "how", " ", "are", " ", "you", "?"]
    assert run.outputs == chunks  # one "output" event per yielded chunk
    assert run.result.output == chunks  # Cog's final output of a stream is its list of items
    assert "".join(run.result.output) == "hello bob, how are you?"
    types = [e.type for e in run.events]
    assert types[0] == "started"
    # Each chunk is printed before it is yielded: logs and outputs interleave in order.
    assert types.index("log") < types.index("output")
    assert "token: 'bob'" in run.result.logs
    assert run.result.logs.count("token: ") == len(chunks)


def test_hello_context_returns_the_request_context(runtime):
    async def body(replica: LocalReplica) -> list[Run]:
        return [
            await predict(replica, pid(), input={"text": "hi"}, context={"k": "v"}),
            await predict(replica, pid(), input={"text": "again"}, context={"other": "x"}),
        ]

    first, second = with_replica(runtime, model_path("cog", "hello-context"), body)
    for run in (first, second):
        assert_succeeded(run)
    assert first.result.output["text"] == "hi"
    assert first.result.output["context"]["k"] == "v"
    # Contexts belong to their request: nothing leaks into the next prediction.
    assert second.result.output["text"] == "again"
    assert second.result.output["context"]["other"] == "x"
    assert "k" not in second.result.output["context"]


def test_hello_weights_without_weights_gets_none(runtime, monkeypatch):
    monkeypatch.delenv("COG_WEIGHTS", raising=False)
    (run,) = run_many(runtime, model_path("cog", "hello-weights"), [{}])
    assert_succeeded(run)
    assert run.result.output == {
        "weights_given": False,
        "weights_kind": None,
        "weights_text": None,
    }


def test_hello_weights_reads_a_local_weights_file(runtime, monkeypatch, tmp_path):
    monkeypatch.delenv("COG_WEIGHTS", raising=False)
    package = tmp_path / "hello-weights"
    shutil.copytree(model_path("cog", "hello-weights"), package)
    (package / "weights").write_text("tiny weights")
    (run,) = run_many(runtime, package, [{}])
    assert_succeeded(run)
    # Cog 0.16 passes a ./weights file as a Path.
    assert run.result.output == {
        "weights_given": True,
        "weights_kind": "path",
        "weights_text": "tiny weights",
    }


def test_hello_weights_reads_cog_weights_url_as_a_file(runtime, monkeypatch):
    # Cog 0.16's own test (tests/server/test_http.py) uses exactly this data URI.
    monkeypatch.setenv("COG_WEIGHTS", "data:text/plain; charset=utf-8;base64,aGVsbG8=")
    (run,) = run_many(runtime, model_path("cog", "hello-weights"), [{}])
    assert_succeeded(run)
    assert run.result.output == {
        "weights_given": True,
        "weights_kind": "file",
        "weights_text": "hello",
    }


def test_output_model_with_a_file_field(runtime):
    (run,) = run_many(runtime, model_path("cog", "output-model"), [{"text": "one two three"}])
    assert_succeeded(run)
    output = run.result.output
    assert {k: v for k, v in output.items() if k != "file"} == {
        "text": "one two three",
        "length": 13,
        "words": ["one", "two", "three"],
        "score": 0.3,
    }
    assert set(output["file"]) == {"$ember.file"}
    landed = run.result.files_dir / output["file"]["$ember.file"]
    assert landed.is_file() and landed.parent == run.result.files_dir
    assert files_in(run.result)["file"] == b"ONE TWO THREE"


def test_iterator_output_streams_ints(runtime):
    runs = run_many(
        runtime,
        model_path("cog", "iterator-output"),
        [{"count": 5}, {}, {"count": 0}, {"count": 21}],
    )
    five, default, zero, too_many = runs
    for run in (five, default, zero):
        assert_succeeded(run)
    assert five.outputs == [0, 1, 4, 9, 16]
    assert five.result.output == [0, 1, 4, 9, 16]
    assert default.outputs == default.result.output == [0, 1, 4]
    assert zero.outputs == [] and zero.result.output == []
    assert_rejected(too_many, "count")


def test_list_output_returns_files(runtime):
    (run,) = run_many(runtime, model_path("cog", "list-output"), [{"count": 3}])
    assert_succeeded(run)
    output = run.result.output
    assert len(output) == 3 and all(set(item) == {"$ember.file"} for item in output)
    assert files_in(run.result) == [f"file number {i}\n".encode() for i in range(3)]
    names = {item["$ember.file"] for item in output}
    assert names == {p.name for p in run.result.files_dir.iterdir()}


def test_blur_runs_in_its_own_environment_with_pillow(runtime):
    image = make_png(9, 6)

    async def body(replica: LocalReplica) -> tuple[LocalReplica, list[Run]]:
        runs = [
            await predict(replica, pid("blur"), input={"image": data_uri(image, "image/png")}),
            await predict(
                replica, pid("blur0"), input={"image": data_uri(image, "image/png"), "blur": 0}
            ),
            await predict(
                replica, pid("blurneg"), input={"image": data_uri(image, "image/png"), "blur": -1}
            ),
        ]
        return replica, runs

    replica, (blurred, unblurred, negative) = with_replica(runtime, model_path("cog", "blur"), body)
    # pillow==13.0.0 in requirements.txt: the replica runs in a uv environment of its own.
    assert replica.environment.shared_with_ember is False
    assert replica.environment.root.is_relative_to(runtime.envs_dir)
    assert replica.environment.root != Path(sys.prefix)
    assert replica.schema == golden("blur")

    original = read_png(image)
    for run in (blurred, unblurred):
        assert_succeeded(run)
        assert set(run.result.output) == {"$ember.file"}
        assert run.result.output["$ember.file"].endswith(".png")
    width, height, channels, rows = read_png(files_in(blurred.result))
    assert (width, height, channels) == (9, 6, 3)
    assert rows != original[3]  # the default radius 2.0 changed the pixels
    assert read_png(files_in(unblurred.result)) == original  # radius 0 leaves them alone
    assert_rejected(negative, "blur")


# -- 3. concurrency -----------------------------------------------------------------------


def test_hello_concurrency_overlaps_four_predictions_on_one_replica(runtime):
    async def body(replica: LocalReplica) -> tuple[LocalReplica, list[Any]]:
        handles = [
            replica.submit(
                PredictionRequest(id=pid(f"c{i}"), input={"text": f"t{i}", "delay": 1.0})
            )
            for i in range(5)
        ]

        async def follow(handle):
            events = [event async for event in handle.events()]
            return handle, events, await handle.result()

        return replica, await asyncio.gather(*(follow(h) for h in handles))

    replica, followed = with_replica(runtime, model_path("cog", "hello-concurrency"), body)
    assert replica.max_concurrency == 4
    results = []
    for handle, events, result in followed:
        assert result.status == "succeeded", result.error
        text = handle.request.input["text"]
        expected = [f"one {text}\n", f"two {text}\n", f"three {text}\n"]
        assert [e.data for e in events if e.type == "output"] == expected  # no cross-talk
        assert result.output == expected
        # emit_metric (Cog <=0.13) and current_scope().record_metric (0.14+) both land on
        # this prediction alone, even with four running at once.
        assert result.metrics["chunks"] == 3
        assert result.metrics["output_tokens"] == 3
        assert result.metrics["predict_time"] > 0
        results.append(result)

    # Four run at once: every one of the first four started before any of them finished.
    by_start = sorted(results, key=lambda r: r.started_at)
    first_four, fifth = by_start[:4], by_start[4]
    assert max(r.started_at for r in first_four) < min(r.completed_at for r in first_four)
    # The fifth waited for a free slot: it started only after one of the others finished.
    assert fifth.started_at >= min(r.completed_at for r in first_four)


# -- 4. constraints through a real replica ------------------------------------------------

# model -> (valid inputs with the output they give, invalid inputs with the field to blame)
CONSTRAINTS: dict[str, tuple[list[tuple[dict, Any]], list[tuple[dict, str]]]] = {
    "constraint-ge-le": (
        [
            ({}, "steps=4 temperature=0.5 offset=0 scale=1.5"),
            (
                {"steps": 10, "temperature": 1.0, "offset": -5, "scale": 2.5},
                "steps=10 temperature=1.0 offset=-5 scale=2.5",
            ),
            (
                {"steps": 1, "temperature": 0, "offset": 99, "scale": -9},
                "steps=1 temperature=0.0 offset=99 scale=-9.0",
            ),
        ],
        [
            ({"steps": 0}, "steps"),
            ({"steps": 11}, "steps"),
            ({"temperature": -0.1}, "temperature"),
            ({"temperature": 1.5}, "temperature"),
            ({"offset": -6}, "offset"),
            ({"scale": 2.6}, "scale"),
            ({"steps": "abc"}, "steps"),
            ({"temperature": "hot"}, "temperature"),
        ],
    ),
    "constraint-length": (
        [({"code": "ab"}, "ab:ok"), ({"code": "abcde", "note": "12345678"}, "abcde:12345678")],
        [
            ({"code": "a"}, "code"),
            ({"code": "abcdef"}, "code"),
            ({"code": "abc", "note": "123456789"}, "note"),
            ({}, "code"),
        ],
    ),
    "constraint-regex": (
        [({}, "#000000"), ({"color": "#A1B2C3"}, "#a1b2c3")],
        [
            ({"color": "red"}, "color"),
            ({"color": "#12345"}, "color"),
            ({"color": "#1234567"}, "color"),
        ],
    ),
    "constraint-choices": (
        [
            ({"mode": "fast"}, "K_EULER/512/fast"),
            ({"mode": "slow", "scheduler": "DDIM", "size": 1024}, "DDIM/1024/slow"),
        ],
        [
            ({"mode": "medium"}, "mode"),
            ({"mode": "fast", "scheduler": "EULER"}, "scheduler"),
            ({"mode": "fast", "size": 300}, "size"),
            ({"mode": "fast", "size": "abc"}, "size"),
            ({}, "mode"),
        ],
    ),
    "constraint-required": (
        [({"name": "ada", "age": 36}, "ada is 36")],
        [({"age": 3}, "name"), ({"name": "x"}, "age"), ({"name": "x", "age": "abc"}, "age")],
    ),
    "constraint-description": (
        [({"prompt": "p", "strength": 2}, "p x2.0")],
        [({"prompt": "p"}, "strength"), ({"prompt": "p", "strength": "strong"}, "strength")],
    ),
    "constraint-default": (
        [
            ({}, "count=10 ratio=0.25 flag=True"),
            ({"x": 2, "label": "n", "ratio": 0.5, "flag": False}, "n=4 ratio=0.5 flag=False"),
        ],
        [({"x": "abc"}, "x"), ({"flag": "maybe"}, "flag")],
    ),
    "constraint-order": (
        [({"last": "L"}, "z,1,0.25,0.5,False,L")],
        [
            ({}, "last"),
            ({"last": "L", "ratio": -1}, "ratio"),
            ({"last": "L", "alpha": "abc"}, "alpha"),
        ],
    ),
    "constraint-optional": (
        [
            # Optional[T] without a default (bare or with Input()) defaults to None.
            ({}, "tag=None seed=None negative=None mask=False bare=None"),
            (
                {"tag": "t", "seed": 3, "negative": "n", "mask": data_uri(b"m"), "bare": 1.5},
                "tag=t seed=3 negative=n mask=True bare=1.5",
            ),
            ({"seed": None, "mask": None}, "tag=None seed=None negative=None mask=False bare=None"),
        ],
        [({"seed": "abc"}, "seed"), ({"mask": "/etc/passwd"}, "mask")],
    ),
    "constraint-path-none": (
        [({}, "img: no image"), ({"image": data_uri(b"12345"), "label": "x"}, "x: 5 bytes")],
        [({"image": "/etc/passwd"}, "image"), ({"image": "data:;base64,!!!"}, "image")],
    ),
    "constraint-list": (
        [
            ({"words": ["a", "b"]}, "a b|3|[]"),
            (
                {
                    "words": ["x"],
                    "numbers": [4, 5, 6],
                    "files": [data_uri(b"abc", "text/plain"), data_uri(b"hello")],
                },
                "x|15|[3, 5]",
            ),
        ],
        [
            ({"numbers": [1]}, "words"),
            ({"words": ["a"], "numbers": ["x"]}, "numbers"),
            ({"words": ["a"], "numbers": 7}, "numbers"),
            ({"words": ["a"], "files": ["not-a-url"]}, "files"),
        ],
    ),
    "constraint-file": (
        [({"document": data_uri(b"hello file", "text/plain")}, "HELLO FILE")],
        [({}, "document"), ({"document": "/etc/hostname"}, "document")],
    ),
    "constraint-deprecated": (
        # A deprecated input is still accepted (and used by this model when given).
        [({}, "a cat"), ({"old_prompt": "a dog"}, "a dog"), ({"prompt": "owl"}, "owl")],
        [],
    ),
    "constraint-kwargs": (
        # **kwargs: undeclared inputs reach predict() as they are.
        [
            ({}, {"received": {}}),
            ({"b": "x", "a": 1, "c": [1, 2]}, {"received": {"a": 1, "b": "x", "c": [1, 2]}}),
        ],
        [],
    ),
}


@pytest.mark.parametrize("name", sorted(CONSTRAINTS))
def test_constraints_enforced_by_the_replica(runtime, name):
    valid, invalid = CONSTRAINTS[name]
    runs = run_many(runtime, model_path("cog", name), [i for i, _ in valid + invalid])
    for (given, expected), run in zip(valid, runs[: len(valid)], strict=True):
        assert_succeeded(run)
        if expected is not None:
            assert run.result.output == expected, given
    for (given, field), run in zip(invalid, runs[len(valid) :], strict=True):
        try:
            assert_rejected(run, field)
        except AssertionError as exc:
            raise AssertionError(f"input {given}: {exc}") from exc


def test_secret_reaches_the_predictor_but_not_the_logs(runtime):
    secret = "sk-" + uuid.uuid4().hex  # 35 characters, unique to this run
    runs = run_many(
        runtime,
        model_path("cog", "constraint-secret"),
        [{"api_token": secret}, {}, {"api_token": 12345}],
    )
    given, missing, wrong_type = runs
    assert_succeeded(given)
    # The predictor read the real value (its length), and its repr is masked.
    assert given.result.output == (
        f"received a secret of length {len(secret)}; repr=Secret('**********')"
    )
    for run in runs:
        assert secret not in run.result.logs
        assert secret not in json.dumps(run.result.output)
        assert secret not in (run.result.error or "")
        assert secret not in json.dumps(run.result.validation_errors)
        assert all(secret not in str(e.data) for e in run.events)
    assert secret not in given.replica.setup_logs
    assert_rejected(missing, "api_token")
    assert_rejected(wrong_type, "api_token")


# -- 5. the cog import shim ---------------------------------------------------------------


def test_cog_imports_come_from_embers_shim(runtime, tmp_path, monkeypatch):
    # The real `cog` package is not installed here. (In-process schema loading may have put
    # Ember's shim folder on sys.path and `cog` in sys.modules: look past both.)
    shims = Path(cog_format.SHIMS).resolve()
    monkeypatch.setattr(sys, "path", [p for p in sys.path if Path(p or ".").resolve() != shims])
    monkeypatch.delitem(sys.modules, "cog", raising=False)
    assert importlib.util.find_spec("cog") is None

    package = tmp_path / "which-cog"
    package.mkdir()
    (package / "cog.yaml").write_text('build:\n  python_version: "3.11"\npredict: "predict.py:P"\n')
    (package / "predict.py").write_text(
        "import cog\n"
        "from cog import BasePredictor, BaseRunner, ConcatenateIterator, File, Input, Path\n"
        "from cog import Secret, current_scope, emit_metric\n\n\n"
        "class P(BasePredictor):\n"
        "    def predict(self, x: int = Input(default=1)) -> dict:\n"
        "        return {'file': cog.__file__, 'version': cog.__version__}\n"
    )
    (run,) = run_many(runtime, package, [{}])
    assert_succeeded(run)
    src = Path(ember.__file__).resolve().parent
    assert Path(run.result.output["file"]).resolve().is_relative_to(src)
    assert run.result.output["version"].startswith("0.16")

    # And an unchanged model importing from cog runs in that same interpreter setup.
    (hello,) = run_many(runtime, model_path("cog", "hello-world"), [{"text": "shim"}])
    assert_succeeded(hello)
    assert hello.result.output == "hello shim"
    assert hello.replica.environment.shared_with_ember is True
