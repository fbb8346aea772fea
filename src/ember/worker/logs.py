"""Capture everything a predictor prints and attribute it to the right prediction.

Two layers, because output arrives two ways:
- Python writes to sys.stdout/sys.stderr go through `ScopedStream`, which asks the scope
  (a context variable, so each concurrent async prediction gets its own lines);
- writes to file descriptors 1 and 2 (C extensions, subprocesses, threads' raw writes) are
  redirected into a pipe; a reader thread gives them to the prediction running alone, if any.
Text nobody owns (setup, the worker itself) goes to the worker log (prediction id None).
"""

from __future__ import annotations

import io
import os
import sys
import threading
from collections.abc import Callable

from ember import scope

Emit = Callable[[str | None, str], None]


class ScopedStream(io.TextIOBase):
    """A text stream that sends each write to the current prediction's log."""

    def __init__(self, emit: Emit, fd: int) -> None:
        self._emit = emit
        self._fd = fd

    def write(self, text: str) -> int:
        if text:
            current = scope.current_scope_or_none()
            self._emit(current.prediction_id if current else None, text)
        return len(text)

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self._fd

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"


class LogCapture:
    """Installs the redirections for the life of the worker process."""

    def __init__(self, emit: Emit) -> None:
        self._emit = emit
        self.original_stderr = os.dup(2)  # the worker's own last-resort diagnostics

    def install(self) -> None:
        read_fd, write_fd = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(write_fd, 1)
        os.dup2(write_fd, 2)
        os.close(write_fd)
        sys.stdout = ScopedStream(self._emit, 1)
        sys.stderr = ScopedStream(self._emit, 2)
        threading.Thread(
            target=self._pump, args=(read_fd,), name="ember-fd-logs", daemon=True
        ).start()

    def _pump(self, read_fd: int) -> None:
        with os.fdopen(read_fd, "rb", buffering=0) as pipe:
            while chunk := pipe.read(65536):
                owner = scope.current_scope_or_none()
                self._emit(owner.prediction_id if owner else None, chunk.decode(errors="replace"))
