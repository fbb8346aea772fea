from cog import BasePredictor, Input


class Predictor(BasePredictor):
    def predict(
        self,
        color: str = Input(
            description="A hex colour such as #a1b2c3",
            regex=r"^#[0-9a-fA-F]{6}$",
            default="#000000",
        ),
    ) -> str:
        return color.lower()
