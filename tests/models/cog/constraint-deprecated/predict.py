from cog import BasePredictor, Input


class Predictor(BasePredictor):
    def predict(
        self,
        prompt: str = Input(description="Current input", default="a cat"),
        old_prompt: str = Input(description="Use prompt instead", default="", deprecated=True),
    ) -> str:
        return old_prompt or prompt
