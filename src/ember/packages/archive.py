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
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
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


def _members(bundle: tarfile.TarFile) -> Iterator[tuple[tarfile.TarInfo, PurePosixPath]]:
    """Each member and its path inside the package, normalised; ArchiveError for a member
    that is not a plain file or folder, or whose path is absolute or climbs out with `..`.

    Links are refused outright, whatever they point at: whether a link leads outside can
    only be judged by resolving it, and resolving lies past PATH_MAX (CVE-2025-4517 took
    tarfile's `data` filter around that, on Pythons before 3.11.13 and 3.12.11); a package
    that needs a file twice can hold it twice. Devices, FIFOs and the like have no place in a
    package either.
    """
    for member in bundle:
        if not (member.isreg() or member.isdir()):
            kind = "a link" if member.issym() or member.islnk() else "not a file or folder"
            raise ArchiveError(
                f"the package archive cannot be unpacked: {member.name!r} is {kind}; a package "
                "holds plain files and folders only (copy the file a link points at instead)"
            )
        path = PurePosixPath(member.name)
        if path.is_absolute() or member.name.startswith("\\") or ".." in path.parts:
            raise ArchiveError(
                f"the package archive cannot be unpacked: {member.name!r} points outside the "
                "package; pack the folder itself (`ember deploy` does)"
            )
        yield member, path


def check_archive(archive: Path) -> None:
    """ArchiveError if a member is not a plain file or folder inside the package (see
    `_members`), or the archive unpacks to more than MAX_PACKAGE_BYTES or MAX_PACKAGE_FILES;
    reads only its headers (a small archive can unpack to terabytes)."""
    limit = int(os.environ.get("EMBER_MAX_PACKAGE_BYTES", MAX_PACKAGE_BYTES))
    total = count = 0
    try:
        with tarfile.open(archive, "r:*") as bundle:
            for member, _ in _members(bundle):
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
    plain files and folders only, each inside `target` (`_members`, checked for the whole
    archive before anything is written, and again as it is written), within the limits of
    `check_archive`. Extraction is Ember's own, the same on every Python: a folder is made
    only under folders it made, and a file is created new (O_EXCL) and never through a link
    (O_NOFOLLOW), so nothing can be written anywhere else."""
    check_archive(archive)
    if target.exists():
        shutil.rmtree(target)
    staging = target.with_name(target.name + ".partial")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        _extract(archive, staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    staging.rename(target)


def _extract(archive: Path, staging: Path) -> None:
    try:
        with tarfile.open(archive, "r:*") as bundle:
            for member, path in _members(bundle):
                _write(bundle, member, staging.joinpath(*path.parts))
    except ArchiveError:
        raise
    except (tarfile.TarError, OSError, EOFError, ValueError) as exc:  # ValueError: a NUL
        raise ArchiveError(f"the package archive cannot be unpacked: {exc}") from exc


def _write(bundle: tarfile.TarFile, member: tarfile.TarInfo, path: Path) -> None:
    """One member at `path`: a folder (rwxr-xr-x), or a new file (rw-r--r--, and executable
    if it was) with the member's bytes."""
    if member.isdir():
        path.mkdir(mode=0o755, parents=True, exist_ok=True)
        return
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    mode = 0o755 if member.mode & 0o111 else 0o644
    source = bundle.extractfile(member)
    assert source is not None  # a regular file's member always has its data
    with source, os.fdopen(os.open(path, flags, mode), "wb") as out:
        shutil.copyfileobj(source, out, 1 << 20)
