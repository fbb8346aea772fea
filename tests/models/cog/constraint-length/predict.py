from cog import BasePredictor, Input


class Predictor(BasePredictor):
    def predict(
        self,
        code: str = Input(description="Between 2 and 5 characters", min_length=2, max_length=5),
        note: str = Input(description="At most 8 characters", default="ok", max_length=8),
    ) -> str:
        return f"{code}:{note}"
