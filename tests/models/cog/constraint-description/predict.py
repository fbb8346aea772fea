from cog import BasePredictor, Input


class Predictor(BasePredictor):
    def predict(
        self,
        prompt: str = Input(description="The text prompt"),
        strength: float = Input(description="How strongly to apply the prompt"),
    ) -> str:
        return f"{prompt} x{strength}"
