"""A streaming predictor that says which process runs it, for the fault-injection tests: it
logs its pid (with its PID namespace: a sandbox has its own), yields `outputs` items, sleeps `seconds`, then yields "done". With `child`, it
first forks a process, stops it with SIGTERM and yields its exit code (as a multiprocessing
pool's terminate() does)."""

import multiprocessing
import os
import time
from collections.abc import Iterator


class Predictor:
    def predict(self, seconds: float = 0.0, outputs: int = 0, child: bool = False) -> Iterator[str]:
        # The pid in the replica's own PID namespace, and which namespace that is.
        print(f"pid {os.getpid()}@{os.readlink('/proc/self/ns/pid')}", flush=True)
        if child:
            process = multiprocessing.get_context("fork").Process(target=time.sleep, args=(30,))
            process.start()
            process.terminate()
            process.join(5)
            yield f"child exit {process.exitcode}"
        for index in range(outputs):
            yield f"item {index}"
        time.sleep(seconds)
        yield "done"
