from cog import BasePredictor, Input


class Predictor(BasePredictor):
    def predict(
        self,
        zeta: str = Input(description="First parameter", default="z"),
        alpha: int = Input(description="Second parameter", default=1),
        ratio: float = Input(description="Third parameter", default=0.25, ge=0),
        mid: float = 0.5,
        beta: bool = Input(description="Fifth parameter", default=False),
        last: str = Input(description="Sixth parameter, required"),
    ) -> str:
        return f"{zeta},{alpha},{ratio},{mid},{beta},{last}"
