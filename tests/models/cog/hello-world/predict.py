from cog import BasePredictor, Input


class Predictor(BasePredictor):
    def setup(self):
        """Prepare state once, before the first prediction."""
        self.prefix = "hello "

    def predict(
        self,
        text: str = Input(description="Text to prefix with 'hello '"),
    ) -> str:
        return self.prefix + text
