"""Capture everything a predictor prints and attribute it to the right prediction.

Two layers, because output arrives two ways:
- Python writes to sys.stdout/sys.stderr go through `ScopedStream`, which asks the scope
  (a context variable, so each concurrent async prediction gets its own lines);
- writes to file descriptors 1 and 2 (C extensions, subprocesses, threads' raw writes) are
  redirected into a pipe; a reader thread gives them to the prediction running alone, if any.
Text nobody owns (setup, the worker itself) goes to the worker log (prediction id None).
"""

from __future__ import annotations

import array
import fcntl
import io
import os
import select
import sys
import termios
import threading
import time
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
        self._read_fd: int | None = None
        self._pumping = threading.Lock()  # held from reading a chunk until it is emitted

    def install(self) -> None:
        read_fd, write_fd = os.pipe()
        self._read_fd = read_fd
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
        # Bytes leave the pipe only under the lock, and are emitted before it is released: so
        # `wait_drained` seeing an empty pipe and then taking the lock cannot miss a chunk that
        # was read but not yet attributed.
        poller = select.poll()
        poller.register(read_fd, select.POLLIN)
        while True:
            poller.poll()
            with self._pumping:
                pending = self._pending(read_fd)
                if not pending:
                    return  # readable with nothing to read: every writer is gone
                chunk = os.read(read_fd, pending)
                owner = scope.current_scope_or_none()
                self._emit(owner.prediction_id if owner else None, chunk.decode(errors="replace"))

    @staticmethod
    def _pending(fd: int) -> int:
        count = array.array("i", [0])
        fcntl.ioctl(fd, termios.FIONREAD, count)
        return count[0]

    def wait_drained(self, limit: float = 1.0) -> None:
        """Wait until text already written to fds 1 and 2 has been attributed.

        Called as a prediction ends, so raw writes made during it are not credited to nobody.
        Costs one ioctl when nothing is pending.
        """
        if self._read_fd is None:
            return
        deadline = time.monotonic() + limit
        while self._pending(self._read_fd) and time.monotonic() < deadline:
            time.sleep(0.0005)
        with self._pumping:  # a chunk read just before is emitted before we return
            pass
