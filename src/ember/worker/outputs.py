"""Turn whatever predict() returned into JSON, moving files into the prediction's folder.

Files are copied, never moved or hard-linked: a predictor may return a file it ships with, or
write the same path again next time (Cog's usual /tmp/out.png), which must not change an
earlier prediction's output. In the JSON they appear as `{"$ember.file": "<name>"}`, a name inside
the prediction's output folder, which the runtime turns into a URL or data URI.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import io
import os
import pathlib
import shutil
from typing import Any

from pydantic import BaseModel

FILE_KEY = "$ember.file"


class OutputError(TypeError):
    """A value predict() returned that cannot be sent as JSON."""


class OutputEncoder:
    """Encodes outputs of one prediction; files land in `folder` with unique names."""

    def __init__(self, folder: pathlib.Path) -> None:
        self.folder = folder

    def _place(self, name: str) -> pathlib.Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        name = os.path.basename(name) or "output"
        candidate, stem, suffix, n = self.folder / name, pathlib.Path(name).stem, "", 1
        suffix = pathlib.Path(name).suffix
        while candidate.exists():
            candidate = self.folder / f"{stem}-{n}{suffix}"
            n += 1
        return candidate

    def _file(self, path: pathlib.Path) -> dict[str, str]:
        if not path.is_file():
            raise OutputError(f"predict() returned the path {path}, which is not a file")
        target = self._place(path.name)
        shutil.copyfile(path, target)
        return {FILE_KEY: target.name}

    def _stream(self, handle: io.IOBase) -> dict[str, str]:
        target = self._place(pathlib.Path(str(getattr(handle, "name", "output"))).name)
        with target.open("wb") as out:
            shutil.copyfileobj(handle, out)  # type: ignore[misc]
        return {FILE_KEY: target.name}

    def encode(self, value: Any) -> Any:
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, enum.Enum):
            return self.encode(value.value)
        if isinstance(value, pathlib.PurePath):
            return self._file(pathlib.Path(value))
        if isinstance(value, io.IOBase):
            return self._stream(value)
        if isinstance(value, BaseModel):
            return {name: self.encode(getattr(value, name)) for name in type(value).model_fields}
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: self.encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, dict):
            return {str(k): self.encode(v) for k, v in value.items()}
        if isinstance(value, (list, tuple, set, frozenset)):
            return [self.encode(v) for v in value]
        if isinstance(value, (datetime.datetime, datetime.date)):
            return value.isoformat()
        if hasattr(value, "item") and callable(value.item):  # numpy scalars
            return self.encode(value.item())
        if hasattr(value, "tolist") and callable(value.tolist):  # numpy arrays
            return self.encode(value.tolist())
        raise OutputError(f"predict() returned a {type(value).__name__}, which is not JSON")
