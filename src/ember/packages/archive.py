"""A package folder as the .tar.gz Ember uploads and stores as a version, and such an
archive unpacked again, safely, where a client uploaded it.

Reproducible: the same files give the same bytes (fixed owners and times, no caches), so
deploying an unchanged folder again is recognised as the existing version.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tarfile
import tempfile
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


# -- reading what a client uploaded ----------------------------------------------------------

# What an uploaded package may unpack to (EMBER_MAX_PACKAGE_BYTES overrides the size).
MAX_PACKAGE_BYTES = 20 * 2**30
MAX_PACKAGE_FILES = 100_000


class ArchiveError(ValueError):
    """An uploaded archive that cannot, or must not, be unpacked; the message says why and
    what to do instead."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def pack_folder(folder: Path) -> Path:
    """A package folder as a .tar.gz in a temporary file (the caller removes it)."""
    handle, path = tempfile.mkstemp(prefix="ember-package-", suffix=".tar.gz")
    with os.fdopen(handle, "wb") as target:
        write_archive(folder, target)
    return Path(path)


def check_archive(archive: Path) -> None:
    """ArchiveError if a member points outside the package, or the archive unpacks to more
    than MAX_PACKAGE_BYTES or MAX_PACKAGE_FILES; reads only its headers (a small archive can
    unpack to terabytes)."""
    limit = int(os.environ.get("EMBER_MAX_PACKAGE_BYTES", MAX_PACKAGE_BYTES))
    total = count = 0
    try:
        with tarfile.open(archive, "r:*") as bundle:
            for member in bundle:
                parts = Path(member.name).parts
                if member.name.startswith(("/", "\\")) or ".." in parts:
                    raise ArchiveError(
                        f"the package archive cannot be unpacked: {member.name!r} points "
                        "outside the package; pack the folder itself (`ember deploy` does)"
                    )
                total += max(member.size, 0)
                count += 1
                if total > limit or count > MAX_PACKAGE_FILES:
                    raise ArchiveError(
                        f"the package unpacks to more than {limit / 2**30:g} GiB or "
                        f"{MAX_PACKAGE_FILES:,} files: leave weights out of it (ship them in a "
                        "PyPI package or fetch them in setup), or raise EMBER_MAX_PACKAGE_BYTES"
                    )
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ArchiveError(f"the package archive cannot be unpacked: {exc}") from exc


def unpack(archive: Path, target: Path) -> None:
    """Extract a .tar.gz package safely into `target` (replaced whole, never half-written):
    no absolute paths, no `..`, no links or devices that lead outside (tarfile's `data`
    filter), and within the size and file-count limits of `check_archive`."""
    check_archive(archive)
    if target.exists():
        shutil.rmtree(target)
    staging = target.with_name(target.name + ".partial")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        with tarfile.open(archive, "r:*") as bundle:
            bundle.extractall(staging, filter="data")
    except (tarfile.TarError, OSError) as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise ArchiveError(f"the package archive cannot be unpacked: {exc}") from exc
    staging.rename(target)
