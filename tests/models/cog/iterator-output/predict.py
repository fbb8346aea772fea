import time
from typing import Iterator

from cog import BasePredictor, Input


class Predictor(BasePredictor):
    def predict(
        self,
        count: int = Input(description="How many numbers to yield", default=3, ge=0, le=20),
    ) -> Iterator[int]:
        for i in range(count):
            time.sleep(0.01)
            yield i * i
