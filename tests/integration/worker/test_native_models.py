"""Ember's own package format (ember.yaml + a typed predictor), run on real worker processes."""

from __future__ import annotations

import asyncio
import base64
import struct
from pathlib import Path
from typing import Any

import pytest

from ember.packages.loader import load_predictor, read_package
from ember.packages.spec import PackageError
from ember.runtime.base import PredictionRequest
from tests.support.paths import model_path
from tests.support.replicas import predict, run_once, start

SECRET = "hunter2-very-secret"


def ember_model(name: str) -> Path:
    return model_path("ember", name)


def data_uri(text: str, mime: str = "text/plain") -> str:
    return f"data:{mime};base64,{base64.b64encode(text.encode()).decode()}"


def valid_inputs(**overrides: Any) -> dict[str, Any]:
    inputs: dict[str, Any] = {
        "text": "hi",
        "count": "7",  # lax: a numeric string is an int
        "ratio": 2,  # an int is a float
        "flag": True,
        "image": data_uri("image bytes"),
        "blob": data_uri("blob bytes", "application/octet-stream"),
        "token": SECRET,
        "tags": ["a", "b"],
        "numbers": [1, 2, 3],
        "files": [data_uri("one"), data_uri("two")],
        "extra_file": "data:text/plain,hello%20there",  # not base64: percent-encoded
        "steps": 50,
        "name": "abcde",
        "code": "ZZ99",
        "color": "green",
        "size": 1024,
        "legacy": "still works",
        "repeat": 1,
    }
    inputs.update(overrides)
    return inputs


# -- all-inputs: schema ----------------------------------------------------------------


def test_all_inputs_schema():
    predictor = load_predictor(read_package(ember_model("all-inputs")))
    from ember.packages.schema import openapi_schema

    schemas = openapi_schema(predictor)["components"]["schemas"]
    inputs = schemas["Input"]
    props = inputs["properties"]
    order = [
        "text", "count", "ratio", "flag", "image", "blob", "token", "tags", "numbers", "files",
        "note", "extra_file", "steps", "name", "code", "color", "size", "legacy", "repeat",
    ]  # fmt: skip
    assert list(props) == order
    assert [props[n]["x-order"] for n in order] == list(range(len(order)))
    # Without a default an input is required, unless it is Optional (then it defaults to None).
    assert inputs["required"] == order[:10]
    assert inputs["additionalProperties"] is False  # misspelt input names are errors

    assert props["text"]["type"] == "string"
    assert props["count"]["type"] == "integer"
    assert props["ratio"]["type"] == "number"
    assert props["flag"]["type"] == "boolean"
    for name in ("image", "blob"):
        assert (props[name]["type"], props[name]["format"]) == ("string", "uri")
    assert props["token"]["format"] == "password"
    assert props["token"]["x-cog-secret"] is True
    assert props["token"]["writeOnly"] is True
    assert props["tags"] == {
        "items": {"type": "string"},
        "title": "Tags",
        "type": "array",
        "x-order": 7,
    }
    assert props["numbers"]["items"] == {"type": "integer"}
    assert props["files"]["items"] == {"type": "string", "format": "uri"}
    assert props["note"]["nullable"] is True and props["note"]["type"] == "string"
    assert "default" not in props["note"]  # Cog leaves null defaults out
    assert props["extra_file"]["nullable"] is True and props["extra_file"]["format"] == "uri"

    steps = props["steps"]
    assert (steps["default"], steps["minimum"], steps["maximum"]) == (10, 1.0, 50.0)
    assert isinstance(steps["minimum"], float)  # Cog types ge/le as float
    assert steps["description"] == "Denoising steps"
    assert (props["name"]["minLength"], props["name"]["maxLength"]) == (2, 5)
    assert props["code"]["pattern"] == "^[A-Z]{2}[0-9]{2}$"
    assert props["legacy"]["deprecated"] is True
    assert props["legacy"]["description"] == "Use name instead"
    # Annotated[int, Input(ge=1, ...)] = 3: the constraint from Input, the default from `= 3`.
    assert props["repeat"]["default"] == 3
    assert props["repeat"]["minimum"] == 1.0
    assert props["repeat"]["description"] == "How many times"

    # choices: one enum component per input, named after it, referenced through allOf.
    assert props["color"] == {
        "allOf": [{"$ref": "#/components/schemas/color"}],
        "default": "red",
        "x-order": 15,
    }
    assert schemas["color"] == {
        "title": "color",
        "type": "string",
        "enum": ["red", "green", "blue"],
        "description": "An enumeration.",
    }
    assert props["size"]["allOf"] == [{"$ref": "#/components/schemas/size"}]
    assert schemas["size"]["type"] == "integer"
    assert schemas["size"]["enum"] == [256, 512, 1024]
    assert schemas["Output"] == {"type": "object", "additionalProperties": True, "title": "Output"}


# -- all-inputs: predictions on one replica ----------------------------------------------


def _errors_by_field(run) -> dict[str, str]:
    return {e["loc"][-1]: e["msg"] for e in run.result.validation_errors}


def test_all_inputs_predictions(runtime):
    async def go():
        replica = await start(runtime, ember_model("all-inputs"))
        try:
            good = await predict(replica, "good", input=valid_inputs())
            defaults = await predict(
                replica,
                "defaults",
                input={k: v for k, v in valid_inputs().items() if k in replica_required(replica)},
            )
            bad = await predict(
                replica,
                "bad",
                input=valid_inputs(
                    count="seven",
                    steps=0,
                    name="a",
                    code="zz12",
                    color="purple",
                    size=300,
                    repeat=0,
                    tags="not-a-list",
                ),
            )
            missing = await predict(replica, "missing", input={"text": "hi"})
            local = await predict(replica, "local", input=valid_inputs(image="/etc/hostname"))
            return replica.schema, good, defaults, bad, missing, local
        finally:
            await replica.stop()

    schema, good, defaults, bad, missing, local = asyncio.run(go())
    assert schema["components"]["schemas"]["Input"]["required"][0] == "text"

    assert good.result.status == "succeeded", good.result.error
    out = good.result.output
    assert out == {
        "setup": "set up",
        "text": "hi",
        "count": 7,
        "ratio": 2.0,
        "flag": True,
        "image": "image bytes",
        "image_is_ember_path": True,
        "blob": "blob bytes",
        "token_type": "Secret",
        "token_received": True,
        "token_length": len(SECRET),
        "tags": ["a", "b"],
        "numbers": [1, 2, 3],
        "files": ["one", "two"],
        "note": None,
        "extra_file": "hello there",
        "steps": 50,
        "name": "abcde",
        "code": "ZZ99",
        "color": "green",
        "color_type": "str",  # the predictor gets the plain value, not the enum member
        "size": 1024,
        "size_type": "int",
        "legacy": "still works",
        "repeat": 1,
        "types": ["int", "float", "bool"],
    }
    assert SECRET not in good.result.logs
    assert "Deprecat" not in good.result.logs  # a deprecated input is documented, not nagged

    assert defaults.result.status == "succeeded", defaults.result.error
    d = defaults.result.output
    assert (d["steps"], d["name"], d["code"], d["color"], d["size"]) == (
        10,
        "ab",
        "AB12",
        "red",
        512,
    )
    assert (d["legacy"], d["repeat"], d["note"], d["extra_file"]) == ("old", 3, None, None)

    assert bad.result.status == "failed"
    assert bad.result.error.startswith("invalid input:")
    errors = _errors_by_field(bad)
    assert set(errors) == {"count", "steps", "name", "code", "color", "size", "repeat", "tags"}
    assert all(e["loc"][0] == "input" for e in bad.result.validation_errors)
    assert "greater than or equal to 1" in errors["steps"]
    assert "at least 2 characters" in errors["name"]
    assert "pattern" in errors["code"]
    assert "'red'" in errors["color"] and "'blue'" in errors["color"]
    assert "256" in errors["size"]
    assert all(e.type != "started" for e in bad.events)  # predict never ran

    assert missing.result.status == "failed"
    assert set(_errors_by_field(missing)) == set(order_required()) - {"text"}
    assert all(msg == "Field required" for msg in _errors_by_field(missing).values())

    # A local path is refused for a file input: the replica may be on another machine.
    assert local.result.status == "failed"
    assert set(_errors_by_field(local)) == {"image"}
    assert "data: URI" in local.result.error


def order_required() -> list[str]:
    return ["text", "count", "ratio", "flag", "image", "blob", "token", "tags", "numbers", "files"]


def replica_required(replica) -> list[str]:
    return replica.schema["components"]["schemas"]["Input"]["required"]


# -- stream-async ----------------------------------------------------------------------


def test_stream_async_concurrent_streams_and_metrics(runtime):
    spec = read_package(ember_model("stream-async"))
    assert (spec.max_concurrency, spec.timeout) == (2, 30.0)

    async def go():
        replica = await start(runtime, spec)
        try:
            a = replica.submit(
                PredictionRequest(id="a", input={"prompt": "one two three four", "delay": 0.1})
            )
            b = replica.submit(PredictionRequest(id="b", input={"prompt": "x y", "delay": 0.15}))
            arrivals: list[str] = []  # which prediction each streamed chunk came from, in order
            events: dict[str, list] = {"a": [], "b": []}

            async def collect(handle):
                async for event in handle.events():
                    events[handle.id].append(event)
                    if event.type == "output":
                        arrivals.append(handle.id)

            await asyncio.gather(collect(a), collect(b))
            return replica, events, arrivals, await a.result(), await b.result()
        finally:
            await replica.stop()

    replica, events, arrivals, a, b = asyncio.run(go())
    assert replica.max_concurrency == 2
    output = replica.schema["components"]["schemas"]["Output"]
    assert output["x-cog-array-type"] == "iterator"
    assert output["x-cog-array-display"] == "concatenate"
    assert output["items"] == {"type": "string"}

    assert a.status == b.status == "succeeded", (a.error, b.error)
    assert [e.data for e in events["a"] if e.type == "output"] == [
        "one ",
        "two ",
        "three ",
        "four ",
    ]
    assert a.output == ["one ", "two ", "three ", "four "]
    assert "".join(b.output) == "x y "
    # Both streamed at once (b's first chunk at ~0.15 s, a's last at ~0.4 s), and each
    # prediction's metrics are its own although they share one event loop.
    assert arrivals.index("b") < len(arrivals) - 1 - arrivals[::-1].index("a"), arrivals
    assert max(a.started_at, b.started_at) < min(a.completed_at, b.completed_at)
    assert (a.metrics["chunks"], b.metrics["chunks"]) == (4, 2)
    assert (a.metrics["scope_prediction_id"], b.metrics["scope_prediction_id"]) == ("a", "b")
    assert a.metrics["predict_time"] > 0


# -- function target -------------------------------------------------------------------


def test_function_target(runtime):
    async def go():
        replica = await start(runtime, ember_model("function"))
        try:
            ok = await predict(replica, "ok", input={"text": "ab", "times": 3})
            bad = await predict(replica, "bad", input={"text": "ab", "times": 11})
            return replica.schema, ok, bad
        finally:
            await replica.stop()

    schema, ok, bad = asyncio.run(go())
    assert ok.result.status == "succeeded", ok.result.error
    assert ok.result.output == "ab-ab-ab"
    assert schema["components"]["schemas"]["Input"]["required"] == ["text"]
    assert schema["components"]["schemas"]["Output"] == {"type": "string", "title": "Output"}
    assert bad.result.status == "failed"
    assert set(_errors_by_field(bad)) == {"times"}


# -- file output -----------------------------------------------------------------------


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])  # IHDR width, height


def _two_images(runtime):
    async def go():
        replica = await start(runtime, ember_model("image-out"))
        try:
            first = await predict(replica, "img1", input={"width": 5, "height": 2})
            size_before = _png_size(first.result.files_dir / "square.png")
            second = await predict(replica, "img2", input={"width": 9, "height": 7})
            return replica.schema, first, size_before, second
        finally:
            await replica.stop()

    return asyncio.run(go())


def test_image_out_returns_file(runtime):
    schema, first, size_before, second = _two_images(runtime)
    for run in (first, second):
        assert run.result.status == "succeeded", run.result.error
        assert run.result.output == {"$ember.file": "square.png"}
    assert first.result.files_dir != second.result.files_dir
    assert size_before == (5, 2)
    assert _png_size(second.result.files_dir / "square.png") == (9, 7)
    # The predictor rewrote the same path for the second image (as Cog models write
    # /tmp/out.png): the first prediction's output must not change with it (outputs are
    # copied, not hard-linked).
    assert _png_size(first.result.files_dir / "square.png") == (5, 2)
    output = schema["components"]["schemas"]["Output"]
    assert (output["type"], output["format"]) == ("string", "uri")


# -- ember.yaml and predictor references -----------------------------------------------


def _package(tmp_path: Path, manifest: str, code: str | None = None) -> Path:
    (tmp_path / "ember.yaml").write_text(manifest)
    (tmp_path / "predict.py").write_text(
        code or "class Predictor:\n    def predict(self, x: int) -> int:\n        return x\n"
    )
    return tmp_path


def test_manifest_unknown_key_is_a_clear_error(tmp_path):
    path = _package(tmp_path, "name: typo\npredictor: predict.py:Predictor\nconcurency: 2\n")
    with pytest.raises(PackageError) as info:
        read_package(path)
    message = str(info.value)
    assert "ember.yaml is invalid" in message
    assert "concurency" in message and "not permitted" in message


def test_manifest_nested_typo_and_bad_name(tmp_path):
    path = _package(
        tmp_path, "name: Bad Name\npredictor: predict.py:Predictor\nresources:\n  gpus: H100\n"
    )
    with pytest.raises(PackageError) as info:
        read_package(path)
    message = str(info.value)
    assert "name:" in message  # uppercase/space fails the name pattern
    assert "resources.gpus" in message


def test_predictor_naming_nothing_in_its_file_is_a_clear_error(tmp_path):
    spec = read_package(_package(tmp_path, "name: ref\npredictor: 'predict.py:Nope'\n"))
    with pytest.raises(PackageError, match="defines no 'Nope'"):
        load_predictor(spec)


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("missing.py:Predictor", "'missing.py' not found"),
        ("predict.py", "must look like 'predict.py:Predictor'"),
    ],
)
def test_bad_predictor_reference_is_caught_when_the_package_is_read(tmp_path, reference, expected):
    with pytest.raises(PackageError, match=expected):
        read_package(_package(tmp_path, f"name: ref\npredictor: '{reference}'\n"))


def test_unknown_input_names_are_rejected_in_ember_packages(runtime):
    run = run_once(runtime, model_path("ember", "function"), input={"text": "a", "stpes": 3})
    assert run.result.status == "failed"
    assert run.result.validation_errors[0]["loc"] == ["input", "stpes"]


def test_bad_predictor_reference_fails_replica_setup_clearly(runtime, tmp_path):
    spec = read_package(_package(tmp_path, "name: ref\npredictor: predict.py:Nope\n"))

    async def go():
        replica = await runtime.start_replica(spec)
        try:
            return await replica.wait_started(), replica.setup_error
        finally:
            await replica.stop()

    state, error = asyncio.run(go())
    assert state == "SETUP_FAILED"
    assert "PackageError" in error and "predict.py defines no 'Nope'" in error


def test_manifest_resources_and_settings_parse(tmp_path):
    path = _package(
        tmp_path,
        "name: big-model\n"
        "predictor: predict.py:Predictor\n"
        "requirements: []\n"
        "environment: {MODE: fast}\n"
        "resources: {gpu: 'H100:2', cpu: 500m, memory: 4Gi}\n"
        "concurrency: 4\n"
        "timeout: 120\n"
        "scaling: {min_instances: 0, max_instances: 3}\n",
    )
    spec = read_package(path)
    assert spec.format == "ember"
    assert spec.resources.gpu is not None
    assert (spec.resources.gpu.type, spec.resources.gpu.count) == ("H100", 2)
    assert spec.resources.cpu == 0.5
    assert spec.resources.memory == 4 * 2**30
    assert (spec.max_concurrency, spec.timeout) == (4, 120.0)
    assert spec.environment == {"MODE": "fast"}
    assert spec.scaling == {"min_instances": 0, "max_instances": 3}


def test_manifest_requirements_file_and_invalid_values(tmp_path):
    (tmp_path / "requirements.txt").write_text("# pinned\nrequests==2.31.0  # http\n\n")
    spec = read_package(
        _package(
            tmp_path,
            "name: reqs\npredictor: predict.py:Predictor\nrequirements: requirements.txt\n",
        )
    )
    assert spec.requirements == ["requests==2.31.0"]
    (tmp_path / "ember.yaml").write_text(
        "name: reqs\npredictor: predict.py:Predictor\nconcurrency: 0\n"
    )
    with pytest.raises(PackageError, match="concurrency"):
        read_package(tmp_path)


def test_predict_without_return_annotation_is_rejected(tmp_path):
    spec = read_package(
        _package(
            tmp_path,
            "name: noret\npredictor: predict.py:predict\n",
            "def predict(x: int):\n    return x\n",
        )
    )
    with pytest.raises(Exception, match="return type annotation"):
        load_predictor(spec)
