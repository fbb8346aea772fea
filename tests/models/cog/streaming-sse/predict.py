import time
from typing import Iterator

from cog import BasePredictor, Input, current_scope, streaming


class Predictor(BasePredictor):
    @streaming
    def predict(
        self, count: int = Input(default=2), sleep_after: float = Input(default=0.0)
    ) -> Iterator[str]:
        current_scope().record_metric("temperature", 0.7)
        for index in range(count):
            time.sleep(0.1)
            print(f"making chunk {index}")
            yield f"chunk-{index}"
            current_scope().record_metric("token_count", 1, mode="incr")
        time.sleep(sleep_after)
