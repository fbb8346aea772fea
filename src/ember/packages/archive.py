"""A package folder as the .tar.gz Ember uploads and stores as a version.

Reproducible: the same files give the same bytes (fixed owners and times, no caches), so
deploying an unchanged folder again is recognised as the existing version.
"""

from __future__ import annotations

import gzip
import tarfile
from pathlib import Path
from typing import IO

SKIPPED = {"__pycache__", ".git", ".venv", ".mypy_cache", ".pytest_cache", ".ruff_cache"}
ARCHIVE_MTIME = 315532800  # 1980-01-01


def _normalise(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    parts = Path(info.name).parts
    if any(part in SKIPPED for part in parts) or info.name.endswith((".pyc", ".pyo")):
        return None
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = ARCHIVE_MTIME
    return info


def write_archive(folder: Path, target: IO[bytes]) -> int:
    """Write `folder` as a reproducible .tar.gz into `target`; returns how many files it holds."""
    count = 0

    def counted(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        nonlocal count
        kept = _normalise(info)
        count += kept is not None and kept.isfile()
        return kept

    with (
        gzip.GzipFile(filename="package.tar", fileobj=target, mode="wb", mtime=0) as zipped,
        tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as bundle,
    ):
        bundle.add(folder, arcname=".", filter=counted)
    return count
