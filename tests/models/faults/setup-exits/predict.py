import os


class Predictor:
    def setup(self) -> None:
        os._exit(7)

    def predict(self) -> str:
        return "never"
