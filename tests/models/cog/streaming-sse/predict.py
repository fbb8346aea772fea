import time
from typing import Iterator

from cog import BasePredictor, Input, streaming


class Predictor(BasePredictor):
    @streaming
    def predict(
        self, count: int = Input(default=2), sleep_after: float = Input(default=0.0)
    ) -> Iterator[str]:
        for index in range(count):
            time.sleep(0.1)
            print(f"making chunk {index}")
            yield f"chunk-{index}"
        time.sleep(sleep_after)
