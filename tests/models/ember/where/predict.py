"""Says where it runs: its package folder (each Ray node unpacks packages under its own data
dir) and process, streaming a few items so tests see output cross nodes as it comes."""

import os
import time
from collections.abc import Iterator


class Predictor:
    def setup(self) -> None:
        self.folder = os.path.dirname(os.path.abspath(__file__))

    def predict(self, items: int = 3, delay: float = 0.05, pause: float = 0) -> Iterator[str]:
        time.sleep(pause)  # before any output: a lost node's prediction may then run again
        yield f"folder={self.folder}"
        yield f"pid={os.getpid()}@{os.readlink('/proc/self/ns/pid')}"  # sandboxes have their own
        yield f"gpus={os.environ.get('CUDA_VISIBLE_DEVICES', 'not set')}"
        for i in range(items):
            time.sleep(delay)
            yield f"item {i}"
