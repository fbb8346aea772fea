"""Reports where it was set up and where it runs, so tests can tell a forked replica (set up
once in the warm host) from a spawned one. START_THREAD=1 makes setup() start a thread,
IMPORT_THREAD=1 makes importing this module start one, START_PROCESS=1 makes setup() start a
helper process (as a model that runs a server beside itself does), FAIL_IF_FORKED=1 makes
setup() fail in a process forked after the import (as CUDA does)."""

import json
import os
import random
import subprocess
import threading
import time

IMPORT_PID = os.getpid()
if os.environ.get("IMPORT_THREAD") == "1":
    threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()


class Predictor:
    def setup(self) -> None:
        if os.environ.get("FAIL_IF_FORKED") == "1" and os.getpid() != IMPORT_PID:
            raise RuntimeError("Cannot re-initialize CUDA in forked subprocess")
        self.setup_pid = os.getpid()
        if os.environ.get("START_THREAD") == "1":
            threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()
        self.helper = None
        if os.environ.get("START_PROCESS") == "1":
            self.helper = subprocess.Popen(["sleep", "3600"])

    def predict(self, mode: str = "info") -> str:
        if mode == "crash":
            os._exit(3)
        if mode == "sleep":
            time.sleep(30)
        return json.dumps(
            {
                "pid": os.getpid(),
                "setup_pid": self.setup_pid,
                "random": random.random(),
                # Popen.poll() of a process this one did not start says it ended (ECHILD).
                "helper_running": self.helper is not None and self.helper.poll() is None,
            }
        )
