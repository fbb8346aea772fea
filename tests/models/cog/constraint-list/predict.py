from typing import List

from cog import BasePredictor, Input, Path


class Predictor(BasePredictor):
    def predict(
        self,
        words: List[str] = Input(description="Words to join"),
        numbers: List[int] = Input(description="Numbers to add", default=[1, 2]),
        files: List[Path] = Input(description="Files whose sizes are reported", default=[]),
    ) -> str:
        sizes = [p.stat().st_size for p in files]
        return f"{' '.join(words)}|{sum(numbers)}|{sizes}"
