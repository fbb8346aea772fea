import time

from cog import BasePredictor, ConcatenateIterator, Input


class Predictor(BasePredictor):
    def predict(
        self,
        text: str = Input(description="Name to greet, one token at a time"),
    ) -> ConcatenateIterator[str]:
        tokens = ["hello", " ", text, ",", " ", "how", " ", "are", " ", "you", "?"]
        for token in tokens:
            print(f"token: {token!r}")
            time.sleep(0.02)
            yield token
