"""Turn file inputs given as URLs or data URIs into local files before predict() runs.

Only inputs typed as files are touched; strings elsewhere are left alone.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

from ember.packages.fetch import InputFileError, fetch
from ember.packages.predictor import Predictor
from ember.types import File
from ember.types import Path as EmberPath

__all__ = ["InputFileError", "materialize"]


def _is_file_type(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, (EmberPath, File))


def _file_shape(annotation: Any) -> str | None:
    """'single', 'list' or None for an input annotation."""
    if _is_file_type(annotation):
        return "single"
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin in (list, typing.List) and args and _is_file_type(args[0]):  # noqa: UP006
        return "list"
    if len(args) == 1 and origin is not None:  # Optional[Path]
        return _file_shape(args[0])
    return None


def materialize(predictor: Predictor, raw: dict[str, Any], folder: Path) -> dict[str, Any]:
    """A copy of `raw` in which every file input is a local path inside `folder`."""
    resolved = dict(raw)
    for field in predictor.inputs:
        value = raw.get(field.name)
        if value is None:
            continue
        shape = _file_shape(field.annotation)
        if shape is None:
            continue
        folder.mkdir(parents=True, exist_ok=True)
        if shape == "list" and isinstance(value, list):
            resolved[field.name] = [str(fetch(v, folder, field.name)) for v in value]
        else:
            resolved[field.name] = str(fetch(value, folder, field.name))
    return resolved
