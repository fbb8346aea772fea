from typing import Optional

from cog import BasePredictor, Path


class Predictor(BasePredictor):
    def setup(self, weights: Optional[Path] = None) -> None:
        self.weights_given = weights is not None
        self.weights_kind = None
        self.weights_text = None
        if weights is None:
            return
        # With COG_WEIGHTS set, Cog 0.16 hands over a file object even though the
        # annotation says Path; with a ./weights file it hands over a Path.
        if hasattr(weights, "read"):
            self.weights_kind = "file"
            data = weights.read(200)
        else:
            self.weights_kind = "path"
            with open(weights, "rb") as f:
                data = f.read(200)
        if isinstance(data, bytes):
            data = data.decode("utf-8", errors="replace")
        self.weights_text = data

    def predict(self) -> dict:
        return {
            "weights_given": self.weights_given,
            "weights_kind": self.weights_kind,
            "weights_text": self.weights_text,
        }
