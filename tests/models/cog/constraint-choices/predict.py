from cog import BasePredictor, Input


class Predictor(BasePredictor):
    def predict(
        self,
        scheduler: str = Input(
            description="Sampling scheduler",
            choices=["DDIM", "K_EULER", "PNDM"],
            default="K_EULER",
        ),
        size: int = Input(description="Output size", choices=[256, 512, 1024], default=512),
        mode: str = Input(description="Required choice, no default", choices=["fast", "slow"]),
    ) -> str:
        return f"{scheduler}/{size}/{mode}"
