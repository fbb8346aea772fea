"""A package's YAML and the claims it makes, bounded when it is read (issue 18, items 6 and 11):
aliases that would expand past any use, non-finite numbers anywhere, resources no machine
has, and settings nothing reads. Each is a PackageError a person can act on. (The same,
through a real server: tests/integration/api/test_attacks_packages.py.)"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from ember.control.scaling import ScalingSettings
from ember.packages.engines import ENGINES
from ember.packages.loader import read_package
from ember.packages.native_sections import (
    ENGINE_OPTIONS,
    LlamaCppOptions,
    LlamaCppSampling,
    ScalingDefaults,
    SentenceTransformersOptions,
)
from ember.packages.spec import PackageError

ENGINE_SOURCES = Path(__file__).resolve().parents[2] / "src" / "ember" / "engines"
PREDICTOR = "name: bounded\npredictor: predict.py:predict\n"
TRUSS_MODEL = {"model/model.py": "class Model:\n    def predict(self, x):\n        return x\n"}


def _read(tmp_path: Path, manifest: str, name: str = "ember.yaml", **files: str) -> object:
    (tmp_path / name).write_text(manifest)
    (tmp_path / "predict.py").write_text("def predict(text: str) -> str:\n    return text\n")
    for relative, text in files.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(text)
    return read_package(tmp_path)


def _refused(tmp_path: Path, manifest: str, *words: str, name: str = "ember.yaml", **files: str):
    with pytest.raises(PackageError) as caught:
        _read(tmp_path, manifest, name, **files)
    for word in words:
        assert word in str(caught.value), str(caught.value)


# -- YAML ------------------------------------------------------------------------------------


def _bomb(levels: int) -> str:
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for level in range(1, levels + 1):
        lines.append(f"a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * 9) + "]")
    return PREDICTOR + "scaling:\n" + "".join(f"  {line}\n" for line in lines)


def test_a_billion_laughs_is_refused_without_expanding_it(tmp_path: Path) -> None:
    """Ten levels stand for 3.5 billion strings; measuring them costs as much as the text.
    (Expanded, it would never return.) Reusing a block within the budget is ordinary YAML,
    which a Cog or Truss file may use."""
    _refused(tmp_path, _bomb(10), "aliases (*name) written out", "KiB")
    truss = "model_name: t\nbase: &b {memory: 1Gi}\nresources: {<<: *b, cpu: 2}\n"
    (tmp_path / "truss").mkdir()
    merged = _read(tmp_path / "truss", truss, "config.yaml", **TRUSS_MODEL)
    assert merged.resources.memory == 2**30  # type: ignore[attr-defined]


def test_an_alias_to_itself_is_refused(tmp_path: Path) -> None:
    _refused(tmp_path, PREDICTOR + "scaling: &loop {keep_warm: [*loop]}\n", "contains it")


def test_deep_nesting_is_refused(tmp_path: Path) -> None:
    _refused(tmp_path, PREDICTOR + "environment: " + "[" * 500 + "]" * 500 + "\n", "levels deep")


def test_a_manifest_past_64_kib_is_refused(tmp_path: Path) -> None:
    _refused(tmp_path, PREDICTOR + "#" * 70_000 + "\n", "larger than 64 KiB")


def test_an_integer_of_5000_digits_is_a_package_error(tmp_path: Path) -> None:
    _refused(tmp_path, PREDICTOR + "timeout: " + "9" * 5000 + "\n", "cannot be read")


@pytest.mark.parametrize(
    ("name", "manifest", "where"),
    [
        ("ember.yaml", PREDICTOR + "timeout: .inf\n", "timeout is inf"),
        ("ember.yaml", PREDICTOR + "environment: {A: .nan}\n", "environment.A is nan"),
        ("cog.yaml", 'predict: "predict.py:predict"\nbuild: {x: [1, -.inf]}\n', "build.x[1]"),
    ],
)
def test_non_finite_numbers_are_refused_anywhere(
    tmp_path: Path, name: str, manifest: str, where: str
) -> None:
    _refused(tmp_path, manifest, where, "finite", name=name)


def test_settings_too_large_for_a_replicas_environment_are_refused(tmp_path: Path) -> None:
    """Each file is within its cap, but together past what one environment variable holds."""
    environment = "".join(f"  V{i}: {'x' * 50}\n" for i in range(1000))
    requirements = "".join(f"package-number-{i}==1.0\n" for i in range(3000))
    _refused(
        tmp_path,
        PREDICTOR + "requirements: requirements.txt\nenvironment:\n" + environment,
        "more than 120 KiB",
        **{"requirements.txt": requirements},
    )


# -- resources and settings ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "words"),
    [
        ("resources: {gpu: 'H100:1000000'}", ["resources.gpu.count", "16"]),
        ("resources: {gpu: 'H100:1e21'}", ["must look like 'H100' or 'H100:2'"]),
        ("resources: {gpu: {type: 'H100 ; x', count: 1}}", ["resources.gpu.type"]),
        ("resources: {memory: 99999999Ti}", ["at most 4Ti"]),
        ("resources: {memory: " + "9" * 400 + "Ti}", ["not a size"]),
        ("resources: {memory: 0}", ["more than 0"]),
        ("resources: {cpu: inf}", ["at most 512 cores"]),
        ("resources: {cpu: " + "9" * 400 + "}", ["at most 512 cores"]),
        ("resources: {cpu: [1]}", ["a number of cores"]),
        ("timeout: inf", ["timeout", "finite"]),
        ("timeout: 86401", ["timeout", "86400"]),
        ("concurrency: 1.0e+21", ["concurrency", "valid integer"]),
        ("concurrency: 10001", ["concurrency", "10000"]),
    ],
)
def test_absurd_claims_in_ember_yaml_are_refused(
    tmp_path: Path, setting: str, words: list[str]
) -> None:
    _refused(tmp_path, PREDICTOR + setting + "\n", "ember.yaml", *words)


def test_claims_up_to_the_bounds_are_kept(tmp_path: Path) -> None:
    at_the_bounds = "resources: {gpu: 'H100:16', cpu: 512, memory: 4Ti}\n"
    at_the_bounds += "concurrency: 10000\ntimeout: 86400\n"
    spec = _read(tmp_path, PREDICTOR + at_the_bounds)
    assert spec.resources.gpu.count == 16  # type: ignore[attr-defined]
    assert spec.resources.memory == 4 * 2**40  # type: ignore[attr-defined]
    assert (spec.max_concurrency, spec.timeout) == (10_000, 86_400)  # type: ignore[attr-defined]
    _refused(tmp_path, PREDICTOR + "resources: {gpu: 'H100:17'}\n", "resources.gpu.count")


@pytest.mark.parametrize(
    ("name", "manifest", "words"),
    [
        (
            "cog.yaml",
            'predict: "predict.py:predict"\nconcurrency: {max: 1.0e+21}\n',
            ["cog.yaml is invalid", "max_concurrency"],
        ),
        (
            "cog.yaml",
            'predict: "predict.py:predict"\nconcurrency: {max: "1e21"}\n',
            ["cog.yaml is invalid", "max_concurrency"],
        ),
        (
            "config.yaml",
            "model_name: t\nruntime: {predict_concurrency: 1000000}\n",
            ["config.yaml is invalid", "10000"],
        ),
        (
            "config.yaml",
            "model_name: t\nresources: {accelerator: 'A100:64'}\n",
            ["config.yaml is invalid", "16"],
        ),
        (
            "config.yaml",
            "model_name: t\nresources: {cpu: '1e999'}\n",
            ["config.yaml is invalid", "at most 512 cores"],
        ),
    ],
)
def test_absurd_claims_in_cog_and_truss_files_are_refused(
    tmp_path: Path, name: str, manifest: str, words: list[str]
) -> None:
    _refused(tmp_path, manifest, *words, name=name, **TRUSS_MODEL)


# -- scaling and engine_options --------------------------------------------------------------


def test_unknown_scaling_settings_name_the_known_ones(tmp_path: Path) -> None:
    _refused(
        tmp_path,
        PREDICTOR + "scaling: {min_replicas: 1}\n",
        "scaling: unknown 'min_replicas'",
        "min_instances, max_instances, target_concurrency",
    )


def test_scaling_settings_are_checked_and_kept_as_written(tmp_path: Path) -> None:
    _refused(tmp_path, PREDICTOR + "scaling: {max_instances: 1000}\n", "scaling.max_instances")
    _refused(tmp_path, PREDICTOR + "scaling: {queue_limit: '5'}\n", "scaling.queue_limit")
    spec = _read(tmp_path, PREDICTOR + "scaling: {max_instances: 2, keep_warm: []}\n")
    assert spec.scaling == {"max_instances": 2, "keep_warm": []}  # type: ignore[attr-defined]


def _engine(name: str, options: str) -> str:
    return f"name: bounded\nengine: {name}\nmodel: weights\nengine_options: {options}\n"


@pytest.mark.parametrize(
    ("engine", "options", "words"),
    [
        ("llama_cpp", "{n_ctxx: 4096}", ["unknown 'n_ctxx'", "known: n_ctx, n_threads"]),
        ("llama_cpp", "{n_ctx: 100000000000}", ["n_ctx: ", "1048576"]),
        ("llama_cpp", "{use_mmap: 1}", ["use_mmap: ", "boolean"]),
        (
            "llama_cpp",
            "{sampling: {temp: 0.2}}",
            ["sampling: unknown 'temp'", "known: temperature"],
        ),
        ("llama_cpp", "{sampling: {top_p: 7}}", ["sampling.top_p: "]),
        ("sentence_transformers", "{batch: 8}", ["unknown 'batch'", "max_batch_size"]),
        ("sentence_transformers", "{matryoshka_dimensions: [0]}", ["between 1 and 65536"]),
        ("vllm", "{'max model len': 5}", ["not a vLLM engine argument"]),
    ],
)
def test_engine_options_are_checked_against_the_engine(
    tmp_path: Path, engine: str, options: str, words: list[str]
) -> None:
    _refused(tmp_path, _engine(engine, options), "engine_options: for the " + engine, *words)


def test_engine_options_within_range_are_kept_as_written(tmp_path: Path) -> None:
    chat = "{n_ctx: 1048576, sampling: {temperature: 0.2, top_p: 0.9}}"  # as examples/chat
    spec = _read(tmp_path, _engine("llama_cpp", chat))
    assert spec.engine.options == {  # type: ignore[attr-defined]
        "n_ctx": 2**20,
        "sampling": {"temperature": 0.2, "top_p": 0.9},
    }
    vllm = _read(tmp_path, _engine("vllm", "{max_model_len: 4096, chat_template: '{{x}}'}"))
    assert vllm.engine.options == {"max_model_len": 4096, "chat_template": "{{x}}"}  # type: ignore[attr-defined]
    _refused(tmp_path, _engine("llama_cpp", "{n_ctx: 1048577}"), "n_ctx: ")


# -- the tables mirror their readers ---------------------------------------------------------


def test_scaling_defaults_mirror_the_deployments_settings() -> None:
    assert list(ScalingDefaults.model_fields) == list(ScalingSettings.model_fields)
    for name, field in ScalingSettings.model_fields.items():
        if name != "keep_warm":  # read as text here; its windows are parsed where applied
            assert ScalingDefaults.model_fields[name].metadata == field.metadata, name


def _literal_keys(module: str, name: str) -> set[str]:
    """The keys of a dict (or the items of a set) assigned to `name` in an engine module,
    read from its source: importing it would import llama.cpp or torch."""
    tree = ast.parse((ENGINE_SOURCES / module).read_text())
    for node in ast.walk(tree):
        targets = getattr(node, "targets", None) or [getattr(node, "target", None)]
        if any(getattr(target, "id", None) == name for target in targets):
            value = node.value  # type: ignore[attr-defined]
            items = value.keys if isinstance(value, ast.Dict) else value.elts
            return {item.value for item in items}
    raise AssertionError(f"{name} not found in {module}")


@pytest.mark.parametrize(
    ("section", "module", "name"),
    [
        (LlamaCppOptions, "llama_cpp_setup.py", "OPTIONS"),
        (LlamaCppSampling, "llama_cpp_sampling.py", "SAMPLING_FIELDS"),
        (SentenceTransformersOptions, "sentence_transformers.py", "OPTIONS"),
    ],
)
def test_engine_option_tables_mirror_the_engines(section: type, module: str, name: str) -> None:
    assert set(section.model_fields) == _literal_keys(module, name)


def test_every_engine_has_its_options_checked() -> None:
    assert set(ENGINE_OPTIONS) == set(ENGINES)
