"""Fetch a file given as an http(s) URL or a data URI into a local folder.

Used for prediction inputs (by the worker) and for Cog's `COG_WEIGHTS` (by the Cog loader).
Local paths are refused: a replica may run on another machine than the caller, and a path
would also let a caller read the replica's files.
"""

from __future__ import annotations

import base64
import binascii
import mimetypes
import os
import re
import urllib.parse
import urllib.request
from pathlib import Path

DOWNLOAD_TIMEOUT = 60.0
_DATA_URI = re.compile(r"^data:(?P<mime>[^;,]*)(?P<params>(;[^;,]*)*?)(?P<b64>;base64)?,", re.I)


class InputFileError(ValueError):
    """A file input that could not be fetched or decoded."""


def _unique(folder: Path, name: str) -> Path:
    name = os.path.basename(name) or "input"
    candidate, stem, suffix, n = folder / name, Path(name).stem, Path(name).suffix, 1
    while candidate.exists():
        candidate = folder / f"{stem}-{n}{suffix}"
        n += 1
    return candidate


def fetch(value: str, folder: Path, field: str) -> Path:
    """Write the file a URL or data URI points at into `folder` and return its path."""
    if not isinstance(value, str):
        raise InputFileError(f"{field}: expected a URL or data URI, got {type(value).__name__}")
    match = _DATA_URI.match(value)
    if match:
        payload = value[match.end() :]
        try:
            data = (
                base64.b64decode(payload, validate=True)
                if match.group("b64")
                else urllib.parse.unquote_to_bytes(payload)
            )
        except (binascii.Error, ValueError) as exc:
            raise InputFileError(f"{field}: the data URI's base64 payload is broken") from exc
        suffix = mimetypes.guess_extension(match.group("mime") or "") or ""
        path = _unique(folder, f"{field}{suffix}")
        path.write_bytes(data)
        return path
    scheme = urllib.parse.urlsplit(value).scheme
    if scheme not in ("http", "https"):
        raise InputFileError(
            f"{field}: {value[:60]!r} is not an http(s) URL or a data: URI; "
            "upload the file or encode it as a data URI"
        )
    url_name = urllib.parse.unquote(Path(urllib.parse.urlsplit(value).path).name)
    try:
        with urllib.request.urlopen(value, timeout=DOWNLOAD_TIMEOUT) as response:
            # The server's name for it, where it gives one (a download link's last segment
            # is often just "download"), else the URL's last segment.
            path = _unique(folder, response.headers.get_filename() or url_name or field)
            with path.open("wb") as out:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
    except OSError as exc:
        raise InputFileError(f"{field}: could not download {value[:80]}: {exc}") from exc
    return path
