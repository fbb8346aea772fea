"""`cog.types`: the module Cog's own types live in, for models that import from it.

Models written against Cog sometimes import `from cog.types import Path, URLPath, ...`
rather than from `cog`. The names resolve to the same Ember types the top-level shim exports,
so such a model validates and gets the same schema either way; `URLPath` and `URLFile` are
Cog's URL-backed variants, which an Ember model sees already fetched by the worker.
"""

from __future__ import annotations

import dataclasses
import io
import os
import pathlib
import shutil
import sys
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

from ember.types import (
    AsyncConcatenateIterator,
    ConcatenateIterator,
    File,
    InputSpec,
    Path,
    Secret,
)
from ember.types import Input as _ember_input

FILENAME_ILLEGAL_CHARS = set("\u0000/")
FILENAME_MAX_LENGTH = 200


def Input(
    default: Any = ...,
    *,
    accept: str | None = None,
    default_factory: Callable[[], Any] | None = None,
    **constraints: Any,
) -> Any:
    """Cog's `Input(...)`: Ember's (`description`, `ge`, `le`, `min_length`, `max_length`,
    `regex`, `choices`, `deprecated`), plus `accept` and `default_factory`.

    `accept` (MIME types or extensions, as in HTML) only annotates the schema as
    `x-cog-accept`; the loader rejects it on inputs that are not files, as Cog's build does.
    `default_factory` is called once here because Cog, too, fixes the default at load.
    """
    if default_factory is not None:
        if default is not ...:
            raise ValueError("cannot give both default and default_factory")
        default = default_factory()
    spec: InputSpec = _ember_input(default, **constraints)
    if accept is not None:
        spec = dataclasses.replace(spec, extra={**spec.extra, "x-cog-accept": accept})
    return spec


class ExperimentalFeatureWarning(Warning):
    """Cog warns with this on experimental features; kept so imports of it work."""


def get_filename(url: str) -> str:
    """The file name a URL or data URI stands for, safe to create on disk.

    Cog names downloaded inputs after the last path segment of their URL; models that build
    output names from an input's name rely on the same rule.
    """
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "data":
        header = parsed.path.split(",", 1)[0]
        mime = header.split(";", 1)[0] or "application/octet-stream"
        subtype = mime.split("/", 1)[-1]
        return f"file.{subtype}" if subtype else "file"
    name = urllib.parse.unquote(os.path.basename(parsed.path)) or "file"
    name = "".join("_" if c in FILENAME_ILLEGAL_CHARS else c for c in name)
    encoded = name.encode("utf-8")
    if len(encoded) > FILENAME_MAX_LENGTH:
        stem, ext = os.path.splitext(name)
        keep = FILENAME_MAX_LENGTH - len(ext.encode("utf-8")) - 1
        stem = stem.encode("utf-8")[:keep].decode("utf-8", errors="ignore")
        name = f"{stem}~{ext}"
    return name


def _is_url(text: str) -> bool:
    return urllib.parse.urlparse(text).scheme in ("http", "https", "data")


def _local(text: str, filename: str) -> str:
    """The path a URLPath shows before conversion: its file name for a URL, else itself."""
    return filename if _is_url(text) else text


class URLPath(Path):
    """A path that stands for a URL until `convert()` downloads it.

    Cog hands predictors `URLPath`s for URL inputs and downloads them lazily; Ember's worker
    has already fetched every file input, so `convert()` only downloads when the model built
    a `URLPath` from a URL itself.
    """

    source: str
    filename: str

    def __new__(cls, source: str | os.PathLike[str], filename: str | None = None) -> URLPath:
        """Keep the URL apart from the path: a URL is not a valid local path."""
        text = os.fspath(source)
        name = filename or get_filename(text)
        self = super().__new__(cls, _local(text, name))
        self.source = text
        self.filename = name
        return self

    def __init__(self, source: str | os.PathLike[str], filename: str | None = None) -> None:
        """Path's own __init__ (Python ≥3.12) must see the local name, not the URL."""
        if sys.version_info >= (3, 12):
            super().__init__(_local(os.fspath(source), filename or get_filename(os.fspath(source))))

    def with_segments(self, *pathsegments: Any) -> Path:
        """Paths derived from it (`/`, `.parent`) are plain paths, not URLs (Python ≥3.12)."""
        return Path(*pathsegments)

    def convert(self) -> Path:
        """Download the URL (if it is one) into a temporary folder and return the local path."""
        if not _is_url(self.source):
            return Path(self.source)
        dest = pathlib.Path(tempfile.mkdtemp(prefix="cog-urlpath-")) / self.filename
        with urllib.request.urlopen(self.source) as response, open(dest, "wb") as out:
            shutil.copyfileobj(response, out)
        return Path(dest)

    def unlink(self, missing_ok: bool = False) -> None:
        """Nothing local to remove until converted; Cog's cleanup calls this on every input."""


class URLFile(File):
    """A readable file backed by a URL, opened on first read.

    Cog's lazy file type; kept so models that construct or annotate with it keep working.
    """

    def __init__(self, url: str, filename: str | None = None) -> None:
        """Remember the URL; nothing is fetched until the file is read."""
        super().__init__()
        self.url = url
        self.name = filename or get_filename(url)
        self._response: io.BufferedIOBase | None = None

    def _wrapped(self) -> Any:
        if self._response is None:
            self._response = urllib.request.urlopen(self.url)
        return self._response

    def readable(self) -> bool:
        """Always readable: reading is what opens it."""
        return True

    def read(self, size: int = -1) -> bytes:
        """Read from the URL's body, fetching it on the first call."""
        return bytes(self._wrapped().read(size))

    def close(self) -> None:
        """Close the underlying response, if it was ever opened."""
        if self._response is not None:
            self._response.close()
        super().close()

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        """Pickle as the URL, as Cog does, not as an open connection."""
        return (type(self), (self.url, self.name))


Weights = File | Path | str

__all__ = [
    "AsyncConcatenateIterator",
    "ConcatenateIterator",
    "ExperimentalFeatureWarning",
    "File",
    "Input",
    "Path",
    "Secret",
    "URLFile",
    "URLPath",
    "Weights",
    "get_filename",
]
