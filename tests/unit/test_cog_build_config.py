"""cog.yaml's `environment:`, `build.python_version` and local requirement paths, read as Cog
reads them: what Cog refuses is refused with Cog's wording, what Cog accepts is accepted."""

from __future__ import annotations

from pathlib import Path

import pytest

from ember.packages.cog import read_spec
from ember.packages.environment_cache import environment_key, worker_runtime_pins
from ember.packages.spec import PackageError


def write_package(root: Path, cog_yaml: str, files: dict[str, str] | None = None) -> Path:
    """A minimal Cog package in ``root``: the given cog.yaml, a predictor, and extra files."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "cog.yaml").write_text(cog_yaml)
    (root / "predict.py").write_text(
        "from cog import BasePredictor\n\n"
        "class Predictor(BasePredictor):\n"
        "    def predict(self) -> str:\n"
        "        return 'ok'\n"
    )
    for name, text in (files or {}).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def with_environment(tmp_path: Path, *entries: str) -> Path:
    lines = "".join(f"  - {entry}\n" for entry in entries)
    return write_package(
        tmp_path / "pkg", f'predict: "predict.py:Predictor"\nenvironment:\n{lines}'
    )


# --------------------------------------------------------------------------- environment:


@pytest.mark.parametrize(
    "entry",
    ["COG_SETUP_TIMEOUT=10", "COG_STREAM_HISTORY_CAPACITY=0", "LD_PRELOAD=/lib/x.so", "FOO=a=b"],
)
def test_environment_accepts_what_cog_accepts(tmp_path, entry):
    spec = read_spec(with_environment(tmp_path, entry))
    key, _, value = entry.partition("=")
    assert spec.environment == {key: value}


@pytest.mark.parametrize(
    "name",
    [
        "PATH",
        "LIBRARY_PATH",
        "NV_DRIVER",
        "NVIDIA_VISIBLE_DEVICES",
        "CUDA_HOME",
        "PGET_CONCURRENCY",
        "HF_ENDPOINT",
        "HF_HUB_ENABLE_HF_TRANSFER",
        "R8_X",
        "REPLICATE_API_TOKEN",
        "KUBERNETES_SERVICE_HOST",
        "PYTHONUNBUFFERED",
    ],
)
def test_environment_refuses_cogs_reserved_names(tmp_path, name):
    with pytest.raises(PackageError, match=f'"{name}" is not allowed: reserved for internal use'):
        read_spec(with_environment(tmp_path, f"{name}=1"))


def test_environment_refuses_duplicates_and_entries_without_equals(tmp_path):
    with pytest.raises(PackageError, match='"A" is already defined'):
        read_spec(with_environment(tmp_path / "dup", "A=1", "A=2"))
    with pytest.raises(PackageError, match="is not in the KEY=VALUE format"):
        read_spec(with_environment(tmp_path / "bare", "JUST_A_NAME"))


# --------------------------------------------------------------------- build.python_version


@pytest.mark.parametrize("version", ["3.7", "3.8", "3.9", "2.7"])
def test_python_older_than_3_10_is_refused_with_cogs_message(tmp_path, version):
    root = write_package(
        tmp_path / version,
        f'build:\n  python_version: "{version}"\npredict: "predict.py:Predictor"\n',
    )
    expected = f'invalid build.python_version "{version}": minimum supported Python version is 3.10'
    with pytest.raises(PackageError, match=expected):
        read_spec(root)


@pytest.mark.parametrize(
    ("version", "message"),
    [
        ("3", "must include major and minor version"),
        ("x.11", "invalid major version number"),
        ("3.y", "invalid minor version number"),
    ],
)
def test_malformed_python_version_is_refused(tmp_path, version, message):
    root = write_package(
        tmp_path / "pkg",
        f'build:\n  python_version: "{version}"\npredict: "predict.py:Predictor"\n',
    )
    with pytest.raises(PackageError, match=message):
        read_spec(root)


@pytest.mark.parametrize("version", ["3.10", "3.12", "3.13.1"])
def test_supported_python_version_is_kept(tmp_path, version):
    root = write_package(
        tmp_path / "pkg",
        f'build:\n  python_version: "{version}"\npredict: "predict.py:Predictor"\n',
    )
    assert read_spec(root).python_version == version


def test_unquoted_python_3_10_is_not_read_as_3_1(tmp_path):
    root = write_package(
        tmp_path / "pkg", 'build:\n  python_version: 3.10\npredict: "predict.py:Predictor"\n'
    )
    assert read_spec(root).python_version == "3.10"


# ---------------------------------------------------------------- local requirement paths


def test_relative_requirement_paths_resolve_in_the_package_folder(tmp_path):
    root = write_package(
        tmp_path / "my model",
        "build:\n  python_requirements: requirements.txt\npredict: predict.py:Predictor\n",
        {
            "requirements.txt": "./dist/a pkg-0.1.zip\n-e ./src/lib\nrequests==2.32.3\n"
            "../shared/b.whl\n-r more.txt\n",
        },
    )
    requirements = read_spec(root).requirements
    folder = root.resolve()
    assert requirements == [
        str(folder / "dist" / "a pkg-0.1.zip"),
        f"-e {folder / 'src' / 'lib'}",
        "requests==2.32.3",  # not a path: untouched
        str(folder.parent / "shared" / "b.whl"),
        f"-r {folder / 'more.txt'}",  # a nested requirements file, found in the package too
    ]


# ------------------------------------------------------------------ worker runtime ranges


def test_worker_runtime_is_a_compatible_range_not_embers_exact_version():
    pins = worker_runtime_pins()
    pydantic = next(pin for pin in pins if pin.startswith("pydantic"))
    assert "==" not in pydantic  # a model pinning pydantic==2.11.9 must still resolve
    assert "<3" in pydantic
    # The ranges are part of the key, so environments built for other ranges are not reused.
    assert environment_key(["x"], "3.12") == environment_key(["x"], "3.12")


# ---------------------------------------------------------------------- COG_SETUP_TIMEOUT


def test_setup_past_cog_setup_timeout_fails(tmp_path, monkeypatch):
    from ember.packages.cog import SetupTimeout, load

    root = write_package(tmp_path / "slow", 'predict: "predict.py:Predictor"\n')
    (root / "predict.py").write_text(
        "import time\n"
        "from cog import BasePredictor\n\n"
        "class Predictor(BasePredictor):\n"
        "    def setup(self) -> None:\n"
        "        time.sleep(30)\n\n"
        "    def predict(self) -> str:\n"
        "        return 'ok'\n"
    )
    monkeypatch.setenv("COG_SETUP_TIMEOUT", "1")
    monkeypatch.syspath_prepend(str(root))
    predictor = load(read_spec(root))
    # Raised from the alarm inside the 30 s sleep: the setup was broken off, not waited for.
    with pytest.raises(SetupTimeout, match="COG_SETUP_TIMEOUT=1s"):
        predictor.setup()


@pytest.mark.parametrize("value", ["0", "soon", ""])
def test_cog_setup_timeout_zero_or_invalid_is_ignored_like_coglet(monkeypatch, value):
    from ember.packages.cog import _setup_timeout

    monkeypatch.setenv("COG_SETUP_TIMEOUT", value)
    assert _setup_timeout() is None


def test_async_setup_past_cog_setup_timeout_fails():
    import asyncio

    from ember.packages.cog import SetupTimeout, _bounded_setup

    async def slow() -> None:
        await asyncio.sleep(30)

    with pytest.raises(SetupTimeout):
        asyncio.run(_bounded_setup(slow, 1)())
