from cog import BasePredictor, Input, Path


class Predictor(BasePredictor):
    def predict(
        self,
        image: Path = Input(description="Optional image; may be left out", default=None),
        label: str = Input(description="Label to return", default="img"),
    ) -> str:
        if image is None:
            return f"{label}: no image"
        return f"{label}: {image.stat().st_size} bytes"
