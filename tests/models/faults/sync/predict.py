"""A synchronous predictor that misbehaves on request, for the fault tests."""

import os
import signal
import sys
import threading
import time

from ember import Input


class Predictor:
    def predict(self, mode: str = Input(default="ok"), seconds: float = 0.0) -> str:
        if mode == "raise":
            print("about to fail")
            raise ValueError("the model exploded")
        if mode == "sleep":
            time.sleep(seconds)
        elif mode == "busy-loop":
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                pass
        elif mode == "ignore-cancel":
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                try:
                    time.sleep(0.05)
                except BaseException:  # a predictor that refuses to stop
                    pass
        elif mode == "crash":
            os.kill(os.getpid(), signal.SIGKILL)
        elif mode == "thread-log":
            worker = threading.Thread(target=lambda: print("hello from a thread"))
            worker.start()
            worker.join()
        elif mode == "fd-log":
            os.write(1, b"raw bytes on fd 1\n")
            os.write(2, b"raw bytes on fd 2\n")
        elif mode == "stderr":
            print("to stderr", file=sys.stderr)
        return mode
