"""Import a predictor's code from its package folder, as its own framework would."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

from ember.packages.spec import PackageError, PackageSpec, package_file


def load_attribute(spec: PackageSpec) -> Any:
    """Import `file.py:Name` from the package root and return `Name`.

    The package root goes first on sys.path so the predictor's sibling modules import the way
    they do under Cog (/src) and Truss (the model folder).
    """
    relative_file, attribute = spec.predictor_parts()
    root = Path(spec.root)
    path = package_file(root, relative_file, "predictor file")
    module_dir = str(path.parent)
    for entry in (module_dir, str(root)):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    module_name = path.stem
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    if module_spec is None or module_spec.loader is None:
        raise PackageError(f"cannot import {path}")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module
    module_spec.loader.exec_module(module)
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise PackageError(f"{relative_file} defines no {attribute!r}") from None
