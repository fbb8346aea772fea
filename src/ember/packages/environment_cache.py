"""How built environments are shared: the key that names one, the lock under which one process
builds it while the others wait, and the ``ember`` link each use repairs.

An environment lives at ``<cache_dir>/<key>`` and is shared by every package whose
requirements and Python version hash to that key, by every Ember process on the machine, and
across Ember installations; what makes that safe is here, apart from the uv build itself
(``environment.py``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

#: Directory inside the environment that holds only the ``ember`` symlink (see
#: ``ember.packages.environment``'s docstring).
EMBER_PATH_DIR = "ember-path"
#: Distributions the worker imports; pinned to Ember's own versions in every environment.
WORKER_RUNTIME_DISTRIBUTIONS = ("pydantic", "pyyaml")

# Bumped whenever the layout or build recipe changes, so old environments are not reused.
_KEY_FORMAT = 1
# pip's comment rule: '#' at line start or after whitespace (so 'pkg @ url#sha256=...' survives).
_COMMENT_RE = re.compile(r"(^|\s)#.*$")


def normalise_requirements(requirements: Sequence[str]) -> list[str]:
    """Requirement lines without comments, blank lines, duplicates or ordering differences."""
    if isinstance(requirements, str):  # a single requirement, or a whole requirements file
        requirements = [requirements]
    lines: set[str] = set()
    for item in requirements:
        for raw in str(item).splitlines():
            line = " ".join(_COMMENT_RE.sub("", raw).split())
            if line:
                lines.add(line)
    return sorted(lines)


def worker_runtime_pins() -> list[str]:
    """``name==version`` for the worker's own dependencies, read from Ember's environment."""
    pins = []
    for dist in WORKER_RUNTIME_DISTRIBUTIONS:
        try:
            pins.append(f"{dist}=={importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            pins.append(dist)
    return pins


def environment_key(
    requirements: Sequence[str], python_version: str, no_deps: Sequence[str] = ()
) -> str:
    """Content hash naming the environment for ``requirements`` on ``python_version``.

    Comments, blank lines, duplicates and order do not matter, so cosmetic edits to a package's
    requirements reuse the existing environment. The worker runtime pins are part of the hash:
    upgrading Ember's pydantic/pyyaml must not reuse environments built with the old versions.
    """
    payload = {
        "format": _KEY_FORMAT,
        "python": python_version.strip(),
        "requirements": normalise_requirements(requirements),
        "runtime": worker_runtime_pins(),
    }
    if no_deps:
        payload["no_deps"] = normalise_requirements(no_deps)
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def _ember_package_dir() -> Path:
    """Directory of the ``ember`` package this code is running from."""
    return Path(__file__).resolve().parents[1]


def link_ember(root: Path) -> None:
    """Point ``<root>/ember-path/ember`` at the currently installed ember package.

    The environment outlives any particular Ember installation (it is keyed by requirements
    only), so the link is checked on every use and atomically replaced if Ember moved.
    """
    link_dir = root / EMBER_PATH_DIR
    link = link_dir / "ember"
    target = str(_ember_package_dir())
    with contextlib.suppress(OSError):
        if os.readlink(link) == target:
            return
    link_dir.mkdir(parents=True, exist_ok=True)
    tmp_link = link_dir / f".ember.{os.getpid()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        tmp_link.unlink()
    tmp_link.symlink_to(target, target_is_directory=True)
    os.replace(tmp_link, link)


@contextlib.contextmanager
def exclusive_lock(
    path: Path, key: str, on_progress: Callable[[str], None] | None
) -> Iterator[None]:
    """Hold an exclusive flock so concurrent builders of one key build it only once."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_progress:
                on_progress(f"Waiting for another Ember process building environment {key[:12]}")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the last descriptor releases the lock
