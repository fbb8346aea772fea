"""The disk tier: keep a package's weights and native libraries in the page cache, so a full
start maps them from memory instead of reading the disk.

Loaders of the field memory-map weights (safetensors, GGUF, `torch.load(mmap=True)`), and an
mmap of a cached file costs nothing (shared/docs/coldstart.md: 96 MiB in 1.4 ms warm against
~84 ms cold; `import torch` 1.6 s warm against 2.4-3.0 s cold). So the tier asks the kernel to
read the big files ahead (`posix_fadvise(WILLNEED)`: asynchronous, no memory of ours) and
asks again from time to time, since the page cache forgets under pressure.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

WEIGHT_SUFFIXES = frozenset(
    {
        ".safetensors",
        ".bin",
        ".pt",
        ".pth",
        ".ckpt",
        ".gguf",
        ".onnx",
        ".h5",
        ".msgpack",
        ".model",
        ".npz",
        ".npy",
        ".so",  # native libraries: torch's alone is hundreds of MB read at import
    }
)
MIN_BYTES = 1 << 20


@dataclass(frozen=True)
class CachedFiles:
    paths: tuple[Path, ...]
    total_bytes: int


def find_weight_files(folders: Iterable[Path], min_bytes: int = MIN_BYTES) -> CachedFiles:
    """Files worth keeping cached under `folders`: weights and native libraries of at least
    `min_bytes` (small files are read quickly anyway). Symlinks are not followed."""
    found: list[Path] = []
    total = 0
    seen: set[Path] = set()
    for folder in folders:
        for directory, _, names in os.walk(folder):
            for name in names:
                path = Path(directory, name)
                if _suffix(name) not in WEIGHT_SUFFIXES or path in seen:
                    continue
                try:
                    stat = path.lstat()
                except OSError:
                    continue
                if stat.st_size >= min_bytes and path.is_file() and not path.is_symlink():
                    seen.add(path)
                    found.append(path)
                    total += stat.st_size
    return CachedFiles(tuple(found), total)


def _suffix(name: str) -> str:
    # libtorch_cpu.so.2 and the like count as .so
    if ".so." in name:
        return ".so"
    return os.path.splitext(name)[1].lower()


def read_ahead(files: CachedFiles) -> int:
    """Ask the kernel to bring `files` into the page cache; returns how many it accepted."""
    accepted = 0
    for path in files.paths:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
            accepted += 1
        except OSError:
            pass
        finally:
            os.close(fd)
    return accepted
