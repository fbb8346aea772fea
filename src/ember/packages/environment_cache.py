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
import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

#: Directory inside the environment that holds only the ``ember`` symlink (see
#: ``ember.packages.environment``'s docstring).
EMBER_PATH_DIR = "ember-path"
#: Distributions the worker imports, each with the range of versions it works with. A range and
#: not Ember's exact version: a model that pins its own pydantic 2.x (Cog's ``granite_project``
#: pins 2.11.9) must still install, and the worker uses only pydantic 2's stable API
#: (``BaseModel``, ``TypeAdapter``, ``model_dump``/``model_validate``) and ``yaml.safe_load``.
WORKER_RUNTIME_REQUIREMENTS = {"pydantic": ">=2.7,<3", "pyyaml": ">=5.4,<7"}

# Bumped whenever the layout or build recipe changes, so old environments are not reused.
_KEY_FORMAT = 2
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
    """Requirements for the worker's own dependencies, added to every environment.

    Compatible ranges rather than Ember's exact versions, so uv resolves them together with the
    model's requirements: a model pinning another pydantic 2.x gets that version, and only a
    model needing pydantic 1 (which the worker cannot run with) fails to resolve.
    """
    return [f"{dist}{spec}" for dist, spec in WORKER_RUNTIME_REQUIREMENTS.items()]


def environment_key(
    requirements: Sequence[str], python_version: str, no_deps: Sequence[str] = ()
) -> str:
    """Content hash naming the environment for ``requirements`` on ``python_version``.

    Comments, blank lines, duplicates and order do not matter, so cosmetic edits to a package's
    requirements reuse the existing environment. The worker runtime ranges are part of the hash:
    when a new Ember needs other pydantic/pyyaml versions, old environments are not reused.
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
