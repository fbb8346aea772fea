"""Tracebacks as a model's author should see them, and no more of the server than that.

A model's failure is shown to its owner (a deploy's answer, the deployment's status, a
prediction's logs). Ember's own frames between the author's code and the error say nothing
the author can act on, and full paths tell a tenant where the operator keeps Ember, its
data and its environments. So frames of Ember's own code and of the import machinery are
left out (unless every frame is theirs: then the error is Ember's and all of it is kept),
the package folder is shown as relative paths (Cog shows `/src/predict.py` the same way,
from inside its container) and the model environment's prefix as `<env>`.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

EMBER_SOURCE = str(Path(__file__).resolve().parents[1]) + "/"


def model_traceback(error: BaseException, package_root: str) -> str:
    """`error`'s traceback without Ember's frames, with server paths shortened."""
    shown = traceback.TracebackException.from_exception(error)
    _drop_ember_frames(shown)
    return shorten_paths("".join(shown.format()), package_root)


def shorten_paths(text: str, package_root: str) -> str:
    """`text` with the package folder and the environment's prefix left out."""
    root = str(Path(package_root).resolve())
    text = text.replace(root + "/", "").replace(package_root.rstrip("/") + "/", "")
    if sys.prefix != "/":
        text = text.replace(sys.prefix.rstrip("/") + "/", "<env>/")
    return text


def _drop_ember_frames(shown: traceback.TracebackException) -> None:
    """Remove Ember's frames from `shown` and from the exceptions chained to it."""
    seen: set[int] = set()
    pending: list[traceback.TracebackException | None] = [shown]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        theirs = [frame for frame in current.stack if not _is_machinery(frame.filename)]
        if theirs:
            current.stack = traceback.StackSummary.from_list(theirs)
        pending.extend([current.__cause__, current.__context__])


def _is_machinery(filename: str) -> bool:
    """Ember's own code, or the import system's frozen frames between it and the model."""
    return filename.startswith((EMBER_SOURCE, "<frozen "))
