"""A predictor whose setup() starts a non-daemon `multiprocessing.Process` that never ends
(Cog's setup_subprocess_multiprocessing test has one): Python's exit waits to join such
children, so a worker that stopped cleanly would never exit by itself."""

import multiprocessing
import time


def _serve_forever() -> None:
    while True:
        time.sleep(1)


class Predictor:
    def setup(self) -> None:
        self.helper = multiprocessing.Process(target=_serve_forever)
        self.helper.start()

    def predict(self) -> int:
        return self.helper.pid
