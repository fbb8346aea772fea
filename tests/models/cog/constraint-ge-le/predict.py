from cog import BasePredictor, Input


class Predictor(BasePredictor):
    def predict(
        self,
        steps: int = Input(description="Whole number between 1 and 10", default=4, ge=1, le=10),
        temperature: float = Input(description="Between 0 and 1", default=0.5, ge=0.0, le=1.0),
        offset: int = Input(description="Lower bound only", default=0, ge=-5),
        scale: float = Input(description="Upper bound only", default=1.5, le=2.5),
    ) -> str:
        return f"steps={steps} temperature={temperature} offset={offset} scale={scale}"
