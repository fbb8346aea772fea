"""A trivial predictor: pure platform overhead, no model work."""


class Predictor:
    def setup(self) -> None:
        pass

    def predict(self, text: str) -> str:
        return text.upper()
