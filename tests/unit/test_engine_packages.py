"""Reading an engine package (`engine:` in ember.yaml) without importing the engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from ember.packages.loader import read_package
from ember.packages.spec import PackageError


def _package(tmp_path: Path, manifest: str) -> Path:
    (tmp_path / "ember.yaml").write_text(manifest)
    return tmp_path


def test_engine_requirements_are_added_unless_pinned(tmp_path: Path) -> None:
    spec = read_package(
        _package(
            tmp_path,
            "name: emb\nengine: sentence_transformers\nmodel: weights\n"
            "requirements: [Sentence_Transformers==6.1.0, numpy]\n",
        )
    )
    assert spec.requirements == ["Sentence_Transformers==6.1.0", "numpy", "torch==2.13.0"]
    assert spec.max_concurrency == 32  # the engine's default
    assert spec.engine is not None and spec.engine.model == "weights"


def test_unknown_engine_names_the_engines(tmp_path: Path) -> None:
    with pytest.raises(PackageError) as caught:
        read_package(_package(tmp_path, "name: x\nengine: onnx\n"))
    assert "llama_cpp (GGUF models" in str(caught.value)


def test_predictor_or_engine_not_both(tmp_path: Path) -> None:
    with pytest.raises(PackageError, match="not both"):
        read_package(_package(tmp_path, "name: x\nengine: vllm\npredictor: p.py:P\n"))
