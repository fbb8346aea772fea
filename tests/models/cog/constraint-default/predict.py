from cog import BasePredictor


class Predictor(BasePredictor):
    def predict(
        self, x: int = 5, label: str = "count", ratio: float = 0.25, flag: bool = True
    ) -> str:
        return f"{label}={x * 2} ratio={ratio} flag={flag}"
