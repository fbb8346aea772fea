"""The name `ember deploy PATH` gives a model when `--name` is left out: the package's own,
made a valid Ember name, whatever format wrote it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ember.cli.client import CommandFailed
from ember.cli.deploy import package_name
from tests.support.paths import EXAMPLES, MODELS


def test_an_ember_package_is_named_by_its_manifest() -> None:
    assert package_name(EXAMPLES / "chat") == "smollm2"


def test_a_truss_model_is_named_by_model_name_made_valid() -> None:
    assert package_name(MODELS / "truss" / "prepost") == "prepost-model"  # "Prepost Model"


def test_a_cog_model_is_named_by_its_image_without_registry_or_tag(tmp_path: Path) -> None:
    package = shutil.copytree(MODELS / "cog" / "hello-world", tmp_path / "Hello World")
    assert package_name(package) == "hello-world"  # no image: the folder's name
    config = package / "cog.yaml"
    config.write_text(config.read_text() + 'image: "r8.im/acme/My_Model:v2"\n')
    assert package_name(package) == "my_model"


def test_a_folder_that_is_no_package_says_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(CommandFailed) as refused:
        package_name(tmp_path)
    assert str(tmp_path) in str(refused.value) and refused.value.code == 2
