"""Tries to read the server's own files from inside a replica: its database, `secret.key`
(the key that seals the secrets stored in that database), another tenant's uploaded file,
another prediction's output and another package's source, each given as the path it has on
the host; and lists the server's folders to find more. It also reports which variables of
the server's environment it inherited (the server holds its admin token there), as names and
hashes of values only.

Why it must fail: a replica runs in a mount namespace built from nothing but the system's
programs, its own package and environment (read-only) and its own scratch folder (also at
/tmp). The data directory is not mounted, so every open() fails (FileNotFoundError) whatever
the files' permissions and whoever the server runs as (root included), a listing shows at
most the replica's own folders, and the environment keeps only what a model needs.

What it can reach of its own (this file, /tmp) is reported too: a refusal then means the
sandbox, not a model that never ran.
"""

import hashlib
import json
import os


def _read(path: str) -> str:
    try:
        with open(path, "rb") as handle:
            return f"read {len(handle.read())} bytes"
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"


def _list(path: str) -> list[str] | str:
    try:
        return sorted(os.listdir(path))
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"


def _scratch() -> str:
    try:
        with open("/tmp/hostile-probe", "w") as handle:
            handle.write("mine")
        with open("/tmp/hostile-probe") as handle:
            return handle.read()
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"


def predict(files: str = "[]", folders: str = "[]") -> str:
    """`files` and `folders`: JSON lists of host paths to read and to list."""
    return json.dumps(
        {
            "files": {path: _read(path) for path in json.loads(files)},
            "folders": {path: _list(path) for path in json.loads(folders)},
            "own_package": _read(__file__),
            "tmp": _scratch(),
            "scratch": os.environ.get("TMPDIR", ""),
            "environment": {
                name: hashlib.sha256(value.encode()).hexdigest()
                for name, value in os.environ.items()
            },
        }
    )
