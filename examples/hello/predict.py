"""A greeting that streams word by word: the smallest useful Ember model."""

import time
from typing import Annotated

from ember import ConcatenateIterator, Input, record_metric


class Predictor:
    def setup(self) -> None:
        """Runs once per replica: load weights here."""
        self.greetings = {"plain": "Hello", "pirate": "Ahoy", "formal": "Good day"}

    def predict(
        self,
        name: str = Input(description="Who to greet"),
        style: str = Input(default="plain", choices=["plain", "pirate", "formal"]),
        repeat: Annotated[int, Input(ge=1, le=5, description="How many times")] = 1,
    ) -> ConcatenateIterator[str]:
        words = f"{self.greetings[style]}, {name}!".split()
        for _ in range(repeat):
            for word in words:
                yield word + " "
                time.sleep(0.05)
        record_metric("words", len(words) * repeat)
